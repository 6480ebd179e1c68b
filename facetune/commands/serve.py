"""`facetune serve`: the prediction service on Ray Serve, until Ctrl-C (or SIGTERM)."""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from dataclasses import asdict

from facetune.detectors import DEFAULT_DETECTOR, DETECTORS
from facetune.errors import UsageError
from facetune.release.paths import PRETRAINED_CHOICES, pretrained_folder, shipped_models_present


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve",
        help="serve predictions over HTTP (Ray Serve), with a web page",
        description=(
            "Serve age, gender and ethnicity predictions over HTTP: POST /predict (an image), "
            "GET /health, GET /models and a page at /. Starts a local Ray instance unless "
            "RAY_ADDRESS names a cluster. Stops cleanly on Ctrl-C or SIGTERM."
        ),
    )
    parser.add_argument("--models", metavar="RESULTS_DIR",
                        help="a sweep's results directory (default: the package's pretrained models, when it has them)")
    parser.add_argument("--family", help="use this model family's checkpoints (cnn, dnn, pca_dnn)")
    parser.add_argument("--pretrained", choices=PRETRAINED_CHOICES, default="fast",
                        help="which shipped model answers without --models: fast (default: one distilled network, "
                        "the lowest latency under load) or ensemble (the most accurate)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--replicas", type=int, default=2, metavar="N",
                        help="most replicas the autoscaler may start (at least one always runs; default 2)")
    parser.add_argument("--max-batch-size", type=int, default=32,
                        help="faces per batched forward pass (1 turns dynamic batching off)")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="longest wait to fill a batch")
    parser.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs reserved per replica")
    parser.add_argument("--device", help="cpu, cuda, cuda:N, mps or auto (default): in each replica, its first GPU when it has one")
    parser.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR,
                        help="face detector: cnn (default; RetinaFace with landmarks) or haar (OpenCV cascades)")
    parser.set_defaults(func=run)
    return parser


def cannot_listen(host: str, port: int, reason: str) -> UsageError:
    """The one error for an HTTP address the proxy cannot take, before Ray starts or after."""
    return UsageError(f"cannot listen on {host}:{port}: {reason} (pass another --port or --host)")


def refuse_unbindable(host: str, port: int) -> None:
    """Raise a UsageError naming host:port when the HTTP proxy could not listen there.

    Without this, Ray starts first and the proxy's failed bind then ends the command with Ray's
    traceback. SO_REUSEADDR as uvicorn sets it, so a port left in TIME_WAIT is not refused.
    """
    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: not a TCP port (1-65535)")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as err:
        raise cannot_listen(host, port, err.strerror or str(err)) from None


def run(args: argparse.Namespace) -> int:
    from facetune.devices import parse_device
    from facetune.predict.choice import read_summary
    from facetune.serve.app import APP_NAME, ServeSettings, build_app

    parse_device(args.device)  # its spelling; whether it exists is for each replica's node
    # Refuse a bad --models here, in one line, rather than as a replica crash loop later.
    try:
        if args.models:
            read_summary(args.models)
        else:
            if not shipped_models_present(pretrained_folder(args.pretrained)):
                raise FileNotFoundError(f"no --models given and no shipped {args.pretrained} model in "
                                        f"{pretrained_folder(args.pretrained)}: pass --models RESULTS_DIR (a sweep's results "
                                        "directory) or another --pretrained")
    except (FileNotFoundError, ValueError) as err:
        print(f"facetune serve: {err}", file=sys.stderr)
        return 2
    if not os.environ.get("RAY_ADDRESS"):
        # A local instance's proxy binds here; on a cluster the proxies bind on its nodes.
        refuse_unbindable(args.host, args.port)
    settings = ServeSettings(
        models=os.path.abspath(args.models) if args.models else None,
        family=args.family,
        pretrained=args.pretrained,
        device=args.device,
        max_batch_size=args.max_batch_size,
        batch_wait_timeout_s=args.batch_wait_ms / 1000,
        max_replicas=max(1, args.replicas),
        replica_cpus=args.replica_cpus,
        detector=args.detector,
    )

    import ray
    from ray import serve

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    address = os.environ.get("RAY_ADDRESS")
    # address="local": a fresh private instance, never some other Ray running on this machine.
    ray.init(address=address or "local", include_dashboard=False, configure_logging=False,
             log_to_driver=False)
    try:
        try:
            serve.start(http_options={"host": args.host, "port": args.port})
        except ray.exceptions.RayTaskError as err:
            # The port was free at the check above but was taken before the proxy bound it.
            if "Failed to bind" not in str(err.cause):
                raise
            raise cannot_listen(args.host, args.port, "another process took the port while Ray started") from None
        serve.run(build_app(asdict(settings)), name=APP_NAME, route_prefix="/")
        print(f"facetune serve: http://{args.host}:{args.port}/ (models: {args.models or 'pretrained ' + args.pretrained}); "
              "Ctrl-C stops", file=sys.stderr, flush=True)
        stop.wait()
    finally:
        print("facetune serve: stopping", file=sys.stderr, flush=True)
        if address:
            serve.delete(APP_NAME)  # a shared cluster: remove our app, leave Serve to its owner
        else:
            serve.shutdown()
        ray.shutdown()
    return 0
