"""The one way a facetune command gets Ray: its own local instance, or the cluster it is given.

    with ray_session(address, num_cpus=2):   # address: a --address flag, or None
        ...

- Ray already initialised in this process (a test, the failure drill): used as it is, left running.
- An address, from the argument or $RAY_ADDRESS (set under `ray job submit`): checked to answer
  within a few seconds, then connected to; on exit this driver disconnects, the cluster stays.
- Neither: a private local Ray (`address="local"`), shut down on exit, also on error.

Never Ray's own default (`ray.init()` with no address), which joins whatever cluster is recorded
in Ray's temporary folder: after a `ray start --head` killed by a signal, that record points at
a dead cluster and the driver hangs on GCS time-outs for minutes. `address="auto"` still means
"the recorded cluster", but only when asked for; it is checked like any other address.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import Any, Iterator
from urllib.parse import urlsplit

from facetune.errors import UsageError

#: How long a given address may take to accept a connection before the command gives up.
CONNECT_TIMEOUT_S = 3.0


def add_address_argument(parser: Any) -> None:
    """The `--address` option every command that runs on Ray takes."""
    parser.add_argument("--address", default=None, metavar="HOST:PORT",
                        help="Ray cluster to run on (default: $RAY_ADDRESS, as under `ray job submit`; "
                             "without either, a private local Ray that stops with the command)")


def requested_address(address: str | None = None) -> tuple[str | None, str]:
    """The address to connect to and where it came from ("--address", "RAY_ADDRESS"), or (None, "")."""
    if address:
        return address, "--address"
    from_env = os.environ.get("RAY_ADDRESS", "").strip()
    return (from_env, "RAY_ADDRESS") if from_env and from_env != "local" else (None, "")


def check_reachable(address: str, origin: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise UsageError (one line, exit 2) unless something accepts a TCP connection at `address`."""
    target = address
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        target = canonicalize_bootstrap_address("auto") or ""
        if not target:
            raise UsageError(f"{origin} {address}: no running Ray cluster is recorded on this machine")
    parts = urlsplit(target if "://" in target else f"//{target}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise UsageError(f"{origin} {address}: not a Ray address (expected HOST:PORT or ray://HOST:PORT)")
    try:
        answered = _speaks_grpc(host, port, timeout_s)
        reason = "not a gRPC server"
    except OSError as err:
        answered = False
        reason = "no answer" if isinstance(err, TimeoutError) else (err.strerror or str(err))
    if answered and parts.scheme != "ray":  # a GCS, not a Ray Client server: ask it for the cluster
        failure = _gcs_failure(f"{host}:{port}", timeout_s)
        answered, reason = failure is None, failure or ""
    if not answered:
        hint = "; unset RAY_ADDRESS to start a local Ray" if origin == "RAY_ADDRESS" else ""
        raise UsageError(f"{origin} {address}: no Ray cluster answers at {host}:{port} "
                         f"({reason} within {timeout_s:g} s){hint}")


#: An HTTP/2 client's opening: the connection preface and an empty SETTINGS frame.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS_FRAME = 4


def _speaks_grpc(host: str, port: int, timeout_s: float) -> bool:
    """Whether an HTTP/2 server (Ray's GCS and client server speak gRPC) answers at host:port.

    An open port is not enough: a proxy or firewall may accept every connection, and Ray would
    then wait on GCS time-outs for minutes. A TLS-only GCS ($RAY_USE_TLS) is taken on its port.
    """
    deadline = time.monotonic() + timeout_s
    with socket.create_connection((host, port), timeout=timeout_s) as connection:
        if os.environ.get("RAY_USE_TLS", "").lower() in ("1", "true"):
            return True
        connection.settimeout(max(0.1, deadline - time.monotonic()))
        connection.sendall(_HTTP2_HELLO)
        reply = connection.recv(9)  # the server's first frame header: length(3) type(1) ...
    return len(reply) >= 4 and reply[3] == _SETTINGS_FRAME


def _gcs_failure(address: str, timeout_s: float) -> str | None:
    """None when a Ray GCS at `address` gives its cluster id within the time, else the reason.

    Any HTTP/2 server passes `_speaks_grpc` (the proxy of a sandbox does); Ray's own GCS client
    tells a GCS apart. It runs in a daemon thread, because on some failures it retries for ~40 s.
    """
    import threading

    from ray._raylet import GcsClient

    outcome: list[str | None] = []

    def ask() -> None:
        try:
            GcsClient(address=address)
            outcome.append(None)
        except Exception as err:  # noqa: BLE001 - any failure means "not a usable GCS"; its text is the reason
            outcome.append(str(err).splitlines()[0] if str(err) else type(err).__name__)

    worker = threading.Thread(target=ask, name="facetune-gcs-probe", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return outcome[0] if outcome else "no answer from its GCS"


def check_address(address: str | None = None) -> None:
    """Fail now (UsageError) when an address is given and nothing answers there; for a command
    that has work to do before it enters `ray_session`."""
    target, origin = requested_address(address)
    if target:
        check_reachable(target, origin)


@contextlib.contextmanager
def ray_session(address: str | None = None, *, log_to_driver: bool = True, **local_options: Any) -> Iterator[None]:
    """Ray for the span of a `with`: the running one, the given cluster, or a private local one.

    `local_options` (num_cpus, include_dashboard, ...) apply only to a local start: a cluster
    that is joined keeps its own resources.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    target, origin = requested_address(address)
    if target:
        check_reachable(target, origin)
        ray.init(address=target, log_to_driver=log_to_driver)
    else:
        ray.init(address="local", log_to_driver=log_to_driver, **local_options)
    try:
        yield
    finally:
        ray.shutdown()
