"""Egress audit hook, loaded into every Python process whose ``PYTHONPATH`` holds this folder.

Python imports ``sitecustomize`` at start-up (the ``site`` module), so putting this folder on
``PYTHONPATH`` audits a whole process without touching its code: a ``sys.addaudithook`` (PEP 578)
appends one JSON line per network event to the file named by ``EGRESS_AUDIT_LOG``:

- ``socket.connect`` / ``socket.sendto`` / ``socket.sendmsg``: ``{"pid", "event", "family", "address"}``
  (``family`` e.g. ``"AF_INET"``, ``"AF_UNIX"``; ``address`` as Python gives it, tuples as lists);
- ``socket.getaddrinfo`` / ``socket.gethostbyname`` / ``socket.gethostbyaddr`` / ``socket.getnameinfo``:
  ``{"pid", "event", "host"}`` (``host`` the name or address asked about; ``getnameinfo`` its sockaddr).

Audit events are raised by Python's ``socket`` module only. uvloop (which uvicorn prefers when it
is installed) connects and resolves inside libuv, out of sight of the hook, so unless
``EGRESS_AUDIT_HIDE_UVLOOP=0`` this module also hides uvloop: ``import uvloop`` fails and uvicorn
falls back to asyncio's loop, whose sockets are Python sockets. Native code (llama-server, onnxruntime)
is watched from outside instead (``strace``, ``/proc/PID/net``; see :mod:`sovereign.testing.egress_audit`).

Nothing here imports Sovereign or any third-party module: it runs before anything else.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import socket
import sys
from typing import Any

LOG_ENV = "EGRESS_AUDIT_LOG"
HIDE_UVLOOP_ENV = "EGRESS_AUDIT_HIDE_UVLOOP"
SOCKET_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})
NAME_EVENTS = frozenset({"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
                         "socket.getnameinfo"})


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it: tuples as lists, bytes as text (surrogate-escaped)."""
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def _family(sock: Any) -> str:
    try:
        family = sock.family
    except AttributeError:
        return "?"
    try:
        return socket.AddressFamily(family).name
    except ValueError:
        return str(family)


class _HideUvloop(importlib.abc.MetaPathFinder):
    """Makes ``import uvloop`` fail, so that uvicorn's ``auto`` loop is asyncio's (see module doc)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == "uvloop" or fullname.startswith("uvloop."):
            raise ModuleNotFoundError(f"{fullname} hidden by the egress audit", name=fullname)


def _install(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        # no re-entry guard: nothing below raises a socket event, and a shared flag would drop the
        # events of other threads
        if event not in SOCKET_EVENTS and event not in NAME_EVENTS:
            return
        try:
            record: dict[str, Any] = {"pid": os.getpid(), "event": event}
            if event in SOCKET_EVENTS:
                record["family"] = _family(args[0])
                record["address"] = _plain(args[1]) if len(args) > 1 else None
            else:
                record["host"] = _plain(args[0]) if args else None
            os.write(fd, (json.dumps(record) + "\n").encode())
        except Exception:  # an audit hook must never break the process it watches
            pass

    sys.addaudithook(hook)


if os.environ.get(LOG_ENV):
    _install(os.environ[LOG_ENV])
    if os.environ.get(HIDE_UVLOOP_ENV, "1") != "0":
        sys.meta_path.insert(0, _HideUvloop())
