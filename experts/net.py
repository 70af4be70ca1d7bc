"""The one `free_port` (the local expert server's launcher, `coe up`, the tests and the benchmarks use it)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

#: where `free_port` looks first: above Ray's worker ports (10002-19999 by default), below Serve's
#: direct-ingress replica ports (30000-31000) and the ephemeral range (from 32768 on Linux by default)
_LOW, _HIGH = 20000, 30000
_RANDOM = random.SystemRandom()  # not the `random` module's generator: a test may seed that


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now. Chosen below the OS's ephemeral range when there is room: the
    kernel hands ephemeral ports to every outgoing connection and to every `bind(0)`, so a port picked
    there can be taken in the moments before its user binds it (a test that starts a Ray cluster in
    between once lost its port so). Another process can still take one of these ports by choosing it,
    as with any free port."""
    high = min(_HIGH, _ephemeral_start())
    if high - _LOW > 100:
        for _ in range(50):
            port = _RANDOM.randrange(_LOW, high)
            if _bindable(host, port):
                return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
