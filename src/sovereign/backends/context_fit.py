"""Context fitting: make a conversation fit one deployment's context window before it is sent.

Policy (``backends.trim_policy``), applied per target deployment, so a fallback to an engine with a
smaller window trims again:

- ``latest`` (default): keep every leading system / developer message (the system prompt) and the
  latest message, then add earlier turns newest-first while they fit. The kept tail is contiguous.
- ``head-and-tail``: as ``latest``, but the first ``keep_head_messages`` non-system messages are kept
  too (task statements often live there); the middle of the conversation is dropped.

After trimming, a kept tail never starts with an assistant turn (chat templates that require
user/assistant alternation reject that). The output budget is the request's ``max_tokens``, or
``reserve_output_tokens`` when the request sets none.

Counting: a free upper bound first (byte-level BPE tokens cover >= 1 UTF-8 byte each, plus a
per-message template overhead), so short prompts cost no tokenizer call; only when the bound does
not fit are messages counted with the target's tokenizer (``count``: the engine's tokenize
endpoint, the embedded model's tokenizer, or an estimate; see ``docs/engines.md``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from sovereign.errors import ContextLengthExceededError
from sovereign.types import ChatMessage, GenerationRequest

TokenCounter = Callable[[str], Awaitable[int]]
TrimPolicy = Literal["latest", "head-and-tail"]

MESSAGE_OVERHEAD = 8  # tokens a chat template adds per message (role markers, separators); ChatML uses 5
PROMPT_OVERHEAD = 32  # BOS, generation prompt, and a default system prompt some templates inject (SmolLM2)
_SYSTEM_ROLES = frozenset({"system", "developer"})


@dataclass(frozen=True, slots=True)
class FitResult:
    """What fitting did: the request to send, its prompt tokens (exact or upper bound), messages dropped."""

    request: GenerationRequest
    prompt_tokens: int
    dropped: int = 0


def upper_bound_tokens(messages: Sequence[ChatMessage]) -> int:
    """A cheap upper bound on prompt tokens: UTF-8 bytes plus template overhead (no tokenizer call)."""
    return sum(len(m.content.encode()) + MESSAGE_OVERHEAD for m in messages) + PROMPT_OVERHEAD


def select_messages(
    roles: Sequence[str], costs: Sequence[int], budget: int, policy: TrimPolicy = "latest", keep_head: int = 2
) -> list[int] | None:
    """Indices of the messages to keep, in order, so their ``costs`` (tokens) sum to <= ``budget``.

    Returns None when even the system prompt plus the latest message exceed ``budget``.
    """
    n = len(costs)
    system = []
    for i, role in enumerate(roles):
        if role not in _SYSTEM_ROLES:
            break
        system.append(i)
    last = n - 1
    keep = set(system) | {last}
    used = sum(costs[i] for i in keep)
    if used > budget:
        return None
    if policy == "head-and-tail":
        for i in [i for i in range(len(system), last) if i not in keep][:keep_head]:
            if used + costs[i] > budget:
                break
            keep.add(i)
            used += costs[i]
    tail_start = last
    for i in range(last - 1, len(system) - 1, -1):
        if i in keep:
            continue
        if used + costs[i] > budget:
            break
        keep.add(i)
        used += costs[i]
        tail_start = i
    if roles[tail_start] == "assistant" and tail_start != last and tail_start not in system:
        keep.discard(tail_start)  # a kept tail starts with a user turn
    return sorted(keep)


async def fit_request(
    request: GenerationRequest,
    *,
    context_window: int,
    reserve_output_tokens: int,
    count: TokenCounter,
    policy: TrimPolicy = "latest",
    keep_head: int = 2,
) -> FitResult:
    """Return ``request`` trimmed (chat) or checked (raw prompt) to fit ``context_window`` tokens.

    Args:
        request: the domain request.
        context_window: the target's window in tokens (prompt + output).
        reserve_output_tokens: output room to keep when ``request.sampling.max_tokens`` is None.
        count: async tokens-of-text function for the target (no template, no BOS).
        policy / keep_head: the trim policy (module docstring).

    Raises:
        ContextLengthExceededError: the requested output alone, or the system prompt plus the latest
            message plus the output, exceed the window.
    """
    output = request.sampling.max_tokens or reserve_output_tokens
    if output >= context_window:
        raise ContextLengthExceededError(
            f"This deployment's context window is {context_window} tokens; max_tokens={output} leaves no room "
            "for the prompt. Lower max_tokens.",
            param="max_tokens",
        )
    if not request.is_chat:
        prompt = request.prompt or ""
        bound = len(prompt.encode()) + PROMPT_OVERHEAD
        tokens = bound if bound + output <= context_window else await count(prompt) + PROMPT_OVERHEAD
        if tokens + output > context_window:
            raise ContextLengthExceededError(
                f"This deployment's context window is {context_window} tokens, but the prompt has about "
                f"{tokens} tokens and {output} are requested for output. Shorten the prompt.",
                param="prompt",
            )
        return FitResult(request, tokens)
    messages = request.messages
    bound = upper_bound_tokens(messages)
    if bound + output <= context_window:
        return FitResult(request, bound)
    counts = await asyncio.gather(*(count(m.content) for m in messages))
    costs = [c + MESSAGE_OVERHEAD for c in counts]
    total = sum(costs) + PROMPT_OVERHEAD
    if total + output <= context_window:
        return FitResult(request, total)
    budget = context_window - output - PROMPT_OVERHEAD
    keep = select_messages([m.role for m in messages], costs, budget, policy, keep_head)
    if keep is None:
        raise ContextLengthExceededError(
            f"This deployment's context window is {context_window} tokens: the system prompt and the latest "
            f"message alone do not fit with {output} output tokens. Shorten them or lower max_tokens.",
            param="messages",
        )
    kept = tuple(messages[i] for i in keep)
    fitted = replace(request, messages=kept)
    return FitResult(fitted, sum(costs[i] for i in keep) + PROMPT_OVERHEAD, dropped=len(messages) - len(kept))
