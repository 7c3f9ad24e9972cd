"""Zero-egress evidence for tests: what a process tried to reach, seen three ways.

1. **Python audit hook** (:mod:`.sitecustomize` in this folder): :func:`audit_env` gives a child
   process ``PYTHONPATH`` and ``EGRESS_AUDIT_LOG``; every ``socket.connect`` / ``sendto`` /
   ``sendmsg`` / ``getaddrinfo`` / ``gethostbyname`` / ``gethostbyaddr`` / ``getnameinfo`` it makes
   is one JSON line (:func:`read_events`); :func:`outbound_events` keeps those that leave the host.
2. **strace** (native code too: llama-server, onnxruntime, tokenizers): :func:`strace_prefix` wraps a
   command so every ``connect`` / ``sendto`` / ``sendmsg`` / ``sendmmsg`` of the process tree is
   written to a file; :func:`strace_outbound` keeps the calls whose socket address is not local.
3. **/proc/PID/net/{tcp,tcp6,udp,udp6}**: :func:`proc_peers` lists the peers of the sockets in a
   process's network namespace; :func:`remote_peers` keeps those that are not loopback or unspecified.

"Local" (:func:`is_local_host`) means a loopback address (127.0.0.0/8, ::1, ::ffff:127.x), the
unspecified address (0.0.0.0, ::, a listening socket's peer), no host at all, or the name
``localhost``; AF_UNIX and AF_NETLINK (the kernel) are local families.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AUDIT_DIR = Path(__file__).resolve().parent
LOG_ENV = "EGRESS_AUDIT_LOG"
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
LOCAL_FAMILIES = frozenset({"AF_UNIX", "AF_NETLINK", "AF_UNSPEC"})
INET_FAMILIES = frozenset({"AF_INET", "AF_INET6"})
PROC_TABLES = ("tcp", "tcp6", "udp", "udp6")
TRACED_CALLS = "connect,sendto,sendmsg,sendmmsg"


def audit_env(log: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables that load the audit hook into a Python child process, writing to ``log``:
    ``PYTHONPATH`` (this folder first, then ``environ``'s own) and ``EGRESS_AUDIT_LOG``."""
    base = (environ if environ is not None else os.environ).get("PYTHONPATH", "")
    path = os.pathsep.join(p for p in (str(AUDIT_DIR), base) if p)
    return {"PYTHONPATH": path, LOG_ENV: str(log)}


def read_events(log: Path) -> list[dict[str, Any]]:
    """The audit records in ``log`` (one dict per line; an absent file is no records)."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def is_local_host(host: Any) -> bool:
    """True for None, an empty name, ``localhost``, or a loopback or unspecified IP address."""
    if host is None or host == "":
        return True
    if not isinstance(host, str):
        return False
    name = host.strip("[]").split("%", 1)[0].lower()
    if name in LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    address = mapped or address
    return address.is_loopback or address.is_unspecified


def outbound_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The audit records that reach, or ask about, anything but this host.

    A socket event is outbound when its family is neither local (AF_UNIX, AF_NETLINK) nor an
    AF_INET/AF_INET6 address of this host; ``sendmsg``/``sendto`` without an address travel on an
    already connected socket (its ``connect`` is judged). A name event is outbound unless it asks
    about a local host.
    """
    found = []
    for event in events:
        if "family" in event:
            family, address = event["family"], event.get("address")
            if family in LOCAL_FAMILIES or address is None:
                continue
            host = address[0] if isinstance(address, list) and address else address
            if family in INET_FAMILIES and is_local_host(host):
                continue
            found.append(event)
        elif not is_local_host(event.get("host")):
            found.append(event)
    return found


def _strace_args(trace: str) -> list[str] | None:
    binary = shutil.which("strace")
    if binary is None:
        return None
    return [binary, "-f", "--seccomp-bpf", "-qq", "-e", f"trace={TRACED_CALLS}", "-e", "signal=none", "-o", trace]


@functools.cache
def strace_works() -> bool:
    """Whether strace is installed and may trace here (a container may forbid ptrace or seccomp)."""
    args = _strace_args(os.devnull)
    if args is None:
        return False
    try:
        return subprocess.run([*args, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def strace_prefix(trace: Path) -> list[str] | None:
    """``strace`` arguments that trace a command's whole process tree's ``connect``/``send*`` calls
    into ``trace`` (a seccomp filter stops only those calls); None when strace is missing or may not
    trace here (:func:`strace_works`)."""
    return _strace_args(str(trace)) if strace_works() else None


_FAMILY = re.compile(r"family=(AF_\w+)")
_INET = re.compile(r'inet_addr\("([^"]*)"\)')
_INET6 = re.compile(r'inet_pton\(AF_INET6, "([^"]*)"')


def strace_calls(trace: Path) -> list[str]:
    """The traced system-call lines of ``trace`` that carry a socket address (``family=AF_...``)."""
    if not trace.exists():
        return []
    return [line for line in trace.read_text(errors="replace").splitlines() if _FAMILY.search(line)]


def strace_outbound(trace: Path) -> list[str]:
    """The lines of ``trace`` whose socket address is neither a local family nor a local IP address."""
    found = []
    for line in strace_calls(trace):
        for match in _FAMILY.finditer(line):
            family = match.group(1)
            if family in LOCAL_FAMILIES:
                continue
            rest = line[match.end():]
            pattern = _INET if family == "AF_INET" else _INET6 if family == "AF_INET6" else None
            host = pattern.search(rest) if pattern is not None else None
            if host is None or not is_local_host(host.group(1)):
                found.append(line)
                break
    return found


@dataclass(frozen=True)
class Peer:
    """One socket of ``/proc/PID/net/<table>``: its table, local and remote ``(ip, port)``, TCP state (hex)."""

    table: str
    local: tuple[str, int]
    remote: tuple[str, int]
    state: str


def _proc_ip(hex_ip: str) -> str:
    """An address as ``/proc/net/tcp*`` prints it (32-bit words in host order, little-endian here)."""
    raw = bytes.fromhex(hex_ip)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def _endpoint(text: str) -> tuple[str, int]:
    ip, port = text.split(":")
    return _proc_ip(ip), int(port, 16)


def parse_proc_table(text: str, table: str) -> list[Peer]:
    """The sockets listed in ``text``, the content of ``/proc/PID/net/<table>`` (header line first)."""
    peers = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4:
            peers.append(Peer(table, _endpoint(fields[1]), _endpoint(fields[2]), fields[3]))
    return peers


def proc_peers(pid: int) -> list[Peer]:
    """Every TCP and UDP socket of the network namespace of process ``pid`` (IPv4 and IPv6).

    Raises:
        FileNotFoundError: no such process.
    """
    peers = []
    for table in PROC_TABLES:
        path = Path(f"/proc/{pid}/net/{table}")
        if path.exists():
            peers += parse_proc_table(path.read_text(), table)
    return peers


def remote_peers(peers: list[Peer]) -> list[Peer]:
    """The sockets whose remote address is neither loopback nor unspecified."""
    return [peer for peer in peers if not is_local_host(peer.remote[0])]


def descendants(pid: int) -> list[int]:
    """The process ids below ``pid`` (children, grandchildren...), read from ``/proc/*/stat``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def command_line(pid: int) -> list[str]:
    """The argv of process ``pid`` (empty when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
