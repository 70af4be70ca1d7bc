"""free_port: a port nothing listens on, below the ephemeral range where the kernel hands out ports to
outgoing connections and bind(0), and below Serve's direct-ingress ports (a long gap between choosing a
port and binding it lost one to another process in tests/deploy/test_multinode.py, Ray starting a cluster
in between)."""

from __future__ import annotations

import random
import socket

from experts import net


def test_free_ports_are_bindable_and_below_the_ephemeral_range() -> None:
    high = min(net._HIGH, net._ephemeral_start())
    ports = {net.free_port() for _ in range(20)}
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # nothing listens there
        if high - net._LOW > 100:
            assert net._LOW <= port < high
    assert len(ports) > 1  # chosen at random, not one port for every caller


def test_a_seeded_random_module_does_not_make_callers_agree() -> None:
    random.seed(0)
    first = net.free_port()
    random.seed(0)
    assert {net.free_port() for _ in range(5)} != {first}


def test_a_port_in_use_is_not_bindable() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        assert not net._bindable("127.0.0.1", taken)
