"""Ports handed to a Ray head or `facetune serve` before Ray starts must stay free while it starts."""
from __future__ import annotations

import socket
from pathlib import Path

from facetune.cluster.local_head import free_ports


def test_free_ports_are_distinct_bindable_and_outside_the_ranges_ray_draws_from():
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = free_ports(12)
    assert len(set(ports)) == 12
    for port in ports:
        assert 20_000 <= port < ephemeral_low  # Ray's workers: 10002-19999; its random ports: above
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
