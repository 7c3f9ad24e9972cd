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
endpoint, the embedded model's tokenizer, or :func:`estimate_tokens`; see ``docs/engines.md``).
:func:`estimate_tokens` is the one token estimate of the code base; every place without a
tokenizer calls it.
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


def estimate_tokens(text: str, *, bytes_per_token: int = 2) -> int:
    """Tokens of ``text`` where no tokenizer is at hand: ``len(UTF-8 bytes) // bytes_per_token + 1``.

    The one token estimate of the code base, in two strengths:

    - ``bytes_per_token=2`` (default; engines without a tokenize endpoint, the agents' context
      packing): an over-count for prose in Latin, Greek and Cyrillic script and for code, where BPE
      vocabularies spend more than 2 bytes per token. Measured with SmolLM2-135M's 49k vocabulary
      (``tests/backends/test_token_estimate.py``), in UTF-8 bytes per token: English 5.0, code 2.9,
      German 2.6, URLs 2.6, Greek 2.3, Russian 2.2. It is NOT a bound below 2 bytes per token:
      CJK (Chinese 1.8-1.9, Japanese 1.7), Hebrew and Thai (1.55), Korean (1.2), emoji (1.6),
      log lines and Markdown tables (1.5-1.7), hex (1.1) and digit runs (1.0: SmolLM2 spends one
      token per digit) are under-counted, by up to half. Larger vocabularies compress these better.
    - ``bytes_per_token=1``: a guaranteed bound for byte-level BPE, whose every token covers at
      least one UTF-8 byte (the ``+ 1`` covers a SentencePiece dummy-prefix token); used where an
      under-count would send an over-long prompt (:func:`upper_bound_tokens`, ``fit_request``).

    Special tokens and chat-template markup are not included (see ``MESSAGE_OVERHEAD`` /
    ``PROMPT_OVERHEAD``). Returns an int >= 1 (1 for ``""``), non-decreasing as ``text`` grows.
    """
    return len(text.encode()) // bytes_per_token + 1


def upper_bound_tokens(messages: Sequence[ChatMessage]) -> int:
    """A cheap, guaranteed upper bound on prompt tokens (no tokenizer call): per message
    :func:`estimate_tokens` at one byte per token (content and tool calls) plus ``MESSAGE_OVERHEAD``,
    plus ``PROMPT_OVERHEAD``. Tool definitions are not included (the template renders them)."""
    per_message = (estimate_tokens(message_text(m), bytes_per_token=1) + MESSAGE_OVERHEAD for m in messages)
    return sum(per_message) + PROMPT_OVERHEAD


def message_text(message: ChatMessage) -> str:
    """Everything of ``message`` the template writes out: content, then each tool call's name and arguments."""
    if not message.tool_calls:
        return message.content
    return message.content + "".join(f" {c.name} {c.arguments}" for c in message.tool_calls)


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
        bound = estimate_tokens(prompt, bytes_per_token=1) + PROMPT_OVERHEAD
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
    counts = await asyncio.gather(*(count(message_text(m)) for m in messages))
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
