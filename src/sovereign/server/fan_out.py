"""``n > 1``: several choices for one chat or text completion, generated side by side.

The gateway fans the request out as ``n`` engine requests (on the embedded engine they decode in
parallel slots); a ``seed`` becomes ``seed + i`` for choice ``i`` so seeded choices differ yet stay
reproducible. Streaming interleaves the choices' chunks as they come, each with its ``index``; the
usage chunk (``include_usage``) comes once at the end, the prompt counted once and completion
tokens summed, as OpenAI reports it. Such requests bypass the response cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from fastapi.responses import StreamingResponse

from sovereign.backends.base import collect
from sovereign.errors import SovereignError
from sovereign.server.responses import OrjsonResponse
from sovereign.server.streaming import CompletionShape, sse_event, sse_response
from sovereign.types import GenerationChunk, GenerationRequest, Usage

Open = Callable[[GenerationRequest], AsyncIterator[GenerationChunk]]
_END = object()


def choice_requests(request: GenerationRequest, n: int) -> list[GenerationRequest]:
    """``n`` copies of ``request``; with a seed, choice ``i`` samples with ``seed + i``."""
    seed = request.sampling.seed
    return [request if seed is None else replace(request, sampling=replace(request.sampling, seed=seed + i))
            for i in range(n)]


async def fan_out(open_stream: Open, request: GenerationRequest, shape: CompletionShape, n: int,
                  *, stream: bool, finish: Callable[[Usage], None]) -> OrjsonResponse | StreamingResponse:
    """Answer with ``n`` choices; ``open_stream(request)`` starts one metered engine stream and
    ``finish(usage)`` records the total usage once.

    Raises:
        SovereignError: a choice failed before anything was sent (JSON, or before the first event).
    """
    requests = choice_requests(request, n)
    if not stream:
        buffered = [replace(r, buffered=True) for r in requests]
        results = await asyncio.gather(*(collect(open_stream(r)) for r in buffered))
        if results[0].metadata:
            shape.extra["sovereign"] = results[0].metadata
        body = shape.body_of(list(results))
        finish(Usage(body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]))
        return OrjsonResponse(body)
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()

    async def pump(i: int, chunks: AsyncIterator[GenerationChunk]) -> None:
        try:
            async for chunk in chunks:
                await queue.put((i, chunk))
        except SovereignError as exc:
            await queue.put((i, exc))
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]  # stops the engine when cancelled
            queue.put_nowait((i, _END))

    tasks = [asyncio.create_task(pump(i, open_stream(r))) for i, r in enumerate(requests)]
    first_index, first = await queue.get()  # an error before the first chunk is an HTTP error
    if isinstance(first, SovereignError):
        for task in tasks:
            task.cancel()
        raise first
    return sse_response(_events(queue, tasks, shape, (first_index, first), n, finish))


async def _events(queue: asyncio.Queue[tuple[int, object]], tasks: list[asyncio.Task[None]], shape: CompletionShape,
                  head: tuple[int, object], n: int, finish: Callable[[Usage], None]) -> AsyncIterator[bytes]:
    shapes = [replace(shape, index=i, include_usage=False) for i in range(n)]
    started: set[int] = set()
    finals: dict[int, Usage] = {}
    ended = 0
    item: tuple[int, object] | None = head
    failed = False
    try:
        while ended < n and not failed:
            i, value = item if item is not None else await queue.get()
            item = None
            if value is _END:
                ended += 1
            elif isinstance(value, SovereignError):
                yield shape.error_event(value)
                failed = True
            elif isinstance(value, GenerationChunk):
                for event in shapes[i].events(value, first=i not in started):
                    yield event
                started.add(i)
                if value.finish_reason is not None:
                    finals[i] = value.usage
    finally:
        for task in tasks:
            task.cancel()
    if finals and not failed:
        usages = list(finals.values())
        total = Usage(usages[0].prompt_tokens, sum(u.completion_tokens for u in usages), usages[0].cached_tokens)
        finish(total)
        if shape.include_usage:
            yield sse_event(shape.usage_chunk(total))
    for event in shape.closing():
        yield event
