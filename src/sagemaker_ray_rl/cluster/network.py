"""Finding hosts on the job network: DNS with retries, this host's IP, whether a port answers.

SageMaker's contract says host names may not resolve at first and that ``/etc/hosts`` must not be
relied on (the training toolkit retries DNS for up to 15 minutes); the interface the hosts talk over
is ``network_interface_name`` of resourceconfig.json (``eth0``; ``ethwe`` in SDK v3 local mode).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import psutil

from sagemaker_ray_rl.contract.errors import ClusterError


def resolve_host(
    host: str,
    *,
    timeout_s: float,
    interval_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """The IPv4 address of `host`, asking DNS again every `interval_s` until `timeout_s` passes.

    Returns:
        A dotted-quad IPv4 address.

    Raises:
        ClusterError: `host` did not resolve within `timeout_s` seconds (the message has the last
            resolver error).
    """
    deadline = clock() + timeout_s
    while True:
        try:
            return socket.gethostbyname(host)
        except OSError as exc:
            if clock() >= deadline:
                raise ClusterError(
                    f"host {host} did not resolve to an address within {timeout_s:g} s (last error: {exc})"
                ) from exc
        sleep(interval_s)


def interface_ip(name: str) -> str | None:
    """The first IPv4 address of network interface `name`, or None when there is no such interface
    (or it has no IPv4 address)."""
    for address in psutil.net_if_addrs().get(name, ()):
        if address.family == socket.AF_INET:
            return address.address
    return None


def own_ip(current_host: str, interface: str, *, timeout_s: float) -> str:
    """This host's address on the job network: the contract's interface, else its own host name.

    Local mode and some networks name the interface differently from resourceconfig.json (SDK v3
    local mode writes ``ethwe`` into containers that have ``eth0``); the host name then decides.

    Raises:
        ClusterError: the interface has no IPv4 address and `current_host` does not resolve.
    """
    return interface_ip(interface) or resolve_host(current_host, timeout_s=timeout_s)


def port_open(ip: str, port: int, *, timeout_s: float = 1.0) -> bool:
    """Whether a TCP connection to `ip`:`port` succeeds within `timeout_s` seconds."""
    try:
        with socket.create_connection((ip, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_for_port(
    ip: str,
    port: int,
    *,
    timeout_s: float,
    interval_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Try `port_open` every `interval_s` until it succeeds (True) or `timeout_s` passes (False)."""
    deadline = clock() + timeout_s
    while True:
        if port_open(ip, port, timeout_s=min(1.0, max(0.1, deadline - clock()))):
            return True
        if clock() >= deadline:
            return False
        sleep(interval_s)
