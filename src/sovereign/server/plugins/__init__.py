"""Start-up plugins: each module here exposes ``async def install(state: AppState) -> None``.

The app factory runs every module's ``install`` (in name order) inside the lifespan, before
models load; a room adds itself to the gateway (chat backends in the registry, services in
``state.services``, background tasks) by adding one module here, with no edit to the factory.
An ``install`` may return an async ``close`` callable that is awaited at shutdown.
"""
