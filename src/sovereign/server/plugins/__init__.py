"""Start-up plugins: each module here exposes ``async def install(state: AppState) -> None``.

The app factory runs every module's ``install`` (in name order) inside the lifespan, before
models load; a room adds itself to the gateway (chat backends in the registry, services in
``state.services``, background tasks) by adding one module here, with no edit to the factory.
An ``install`` may return an async ``close`` callable that is awaited at shutdown (in reverse
order). A module may set ``ORDER`` (int, default 100; lower runs first), e.g. logging and tracing
run before everything else so start-up logs are already structured.
"""
