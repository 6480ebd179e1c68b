"""A local Ray head started with `ray start --head --block`: dashboard on 127.0.0.1, token auth on.

Used by tests (job submission against a real head) and by scripts that want a throwaway
cluster on one machine. The head runs in its own process group on free ports with its own
temp dir, so several heads on one machine do not collide, and `stop()` ends exactly that
group (never `ray stop`, which would end every Ray on the machine).
"""
from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, closing
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"
#: Environment variables Ray 2.60 reads for token authentication (see ray._private.authentication).
AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
DEFAULT_TOKEN_PATH = Path.home() / ".ray" / "auth_token"

# The ports `ray start --head` would otherwise take from fixed defaults (6379, 8265, 10001,
# 52365, ...); each gets a free one so concurrent heads and test runs never collide.
_PORT_FLAGS = (
    "--port",
    "--dashboard-port",
    "--ray-client-server-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
    "--node-manager-port",
    "--object-manager-port",
)


class HeadStartError(RuntimeError):
    """The head process exited or did not become ready; the message carries its log tail."""


# Ports Ray binds by itself: random ones at or above the kernel's ephemeral range (bind to 0, then
# a random port above it) and workers' 10002-19999 under `ray start`. A port handed out from that
# range can be taken by a starting Ray daemon before its intended owner binds it.
_QUIET_PORTS_FROM = 20_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return `count` distinct ports that are free on `host` right now and that Ray does not draw
    for itself (between 20000 and the ephemeral range), so they stay free while Ray starts."""
    try:
        ephemeral_low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = _QUIET_PORTS_FROM  # not Linux: only the kernel's choice is left
    candidates = list(range(_QUIET_PORTS_FROM, ephemeral_low))
    random.shuffle(candidates)
    with ExitStack() as stack:
        # Hold every socket open until all ports are chosen, so the ports are distinct.
        chosen = []
        for port in candidates:
            if len(chosen) == count:
                break
            sock = stack.enter_context(closing(socket.socket()))
            try:
                sock.bind((host, port))
            except OSError:
                continue
            chosen.append(port)
        while len(chosen) < count:
            sock = stack.enter_context(closing(socket.socket()))
            sock.bind((host, 0))
            chosen.append(sock.getsockname()[1])
        return chosen


def ray_executable() -> str:
    """The `ray` CLI of the running interpreter's environment (a venv need not be activated)."""
    beside_python = Path(sys.executable).with_name("ray")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("ray")
    if found is None:
        raise FileNotFoundError("the `ray` command was not found beside Python or on PATH")
    return found


def write_new_token(path: Path) -> str:
    """Write a fresh 256-bit token to `path`, readable by the owner only, and return it."""
    token = secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    return token


class LocalHead:
    """A `ray start --head --block` process group, dashboard on 127.0.0.1; a context manager.

    `token_path=None` uses the user's token (``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``,
    created by ``ray get-auth-token --generate`` when missing); `fresh_token=True` writes a new
    token into the head's temp dir instead, which isolates tests from the user's token.
    """

    def __init__(
        self,
        *,
        num_cpus: int = 2,
        num_gpus: int = 0,
        object_store_mb: int = 200,
        token_path: Path | None = None,
        fresh_token: bool = False,
        ready_timeout_s: float = 120.0,
        keep_temp_dir: bool = False,
    ) -> None:
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.object_store_mb = object_store_mb
        self.ready_timeout_s = ready_timeout_s
        self.keep_temp_dir = keep_temp_dir
        self.fresh_token = fresh_token
        self.token_path = token_path or Path(os.environ.get(AUTH_TOKEN_PATH_ENV, DEFAULT_TOKEN_PATH))
        # Set by start(): the head's own temp dir, its ports and addresses.
        self.temp_dir = Path()
        self.log_path = Path()
        self.gcs_address = ""
        self.dashboard_url = ""
        self._ports: dict[str, int] = {}
        self._process: subprocess.Popen | None = None

    @property
    def ports(self) -> dict[str, int]:
        """The port given to each `ray start` port flag, e.g. ports["--dashboard-port"]."""
        return dict(self._ports)

    @property
    def token(self) -> str:
        return self.token_path.read_text().strip()

    @property
    def pgid(self) -> int | None:
        """Process-group id of the head (its `ray start` process leads the group)."""
        return self._process.pid if self._process is not None else None

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a client (`ray job submit`, a driver) that talks to this head with its token."""
        env = dict(os.environ if base is None else base)
        env.pop(AUTH_TOKEN_ENV, None)  # it would win over the token file
        env[AUTH_MODE_ENV] = "token"
        env[AUTH_TOKEN_PATH_ENV] = str(self.token_path)
        env["RAY_ADDRESS"] = self.dashboard_url
        return env

    def auth_headers(self) -> dict[str, str]:
        """HTTP headers for the dashboard / job REST API (e.g. `JobSubmissionClient(headers=...)`)."""
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> "LocalHead":
        if self._process is not None:
            raise RuntimeError("this head is already started")
        # Short path under /tmp: Ray puts Unix sockets in it (107-byte limit on socket paths).
        # Ray also writes its "current cluster" file here, so a bare `ray.init()` elsewhere on
        # the machine never joins this head by accident.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ft-ray-", dir="/tmp"))
        self.log_path = self.temp_dir / "ray_start.log"
        if self.fresh_token:
            self.token_path = self.temp_dir / "auth_token"
            write_new_token(self.token_path)
        self._ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS))))
        self.gcs_address = f"{LOOPBACK}:{self._ports['--port']}"
        self.dashboard_url = f"http://{LOOPBACK}:{self._ports['--dashboard-port']}"
        if not self.token_path.exists():
            # Ray's own generator; writes ~/.ray/auth_token (0600) for the default path.
            subprocess.run([ray_executable(), "get-auth-token", "--generate"], check=True,
                           capture_output=True, env=self._head_env())
        command = [
            ray_executable(), "start", "--head", "--block",
            # The dashboard and job server (HTTP) listen on loopback only. Ray's gRPC services
            # (GCS, raylet) listen on all interfaces whatever the node IP; the token guards them.
            "--include-dashboard=true", f"--dashboard-host={LOOPBACK}",
            f"--num-cpus={self.num_cpus}", f"--num-gpus={self.num_gpus}",
            f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
            f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
            *(f"{flag}={port}" for flag, port in self._ports.items()),
        ]
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self._head_env(),
                start_new_session=True,  # own process group: stop() ends exactly this head
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace_s: float = 5.0) -> None:
        """End the head's process group: SIGTERM (ray start cleans up), then SIGKILL what is left."""
        process, self._process = self._process, None
        if process is not None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
            # Ray workers lead their own process groups but stay in the head's session; they
            # exit with their raylet, and any that linger are ended here by that session id.
            for pid in session_members(process.pid):
                _signal_process(pid, signal.SIGKILL)
        if not self.keep_temp_dir and self.temp_dir.name.startswith("ft-ray-"):
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def __enter__(self) -> "LocalHead":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _head_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop(AUTH_TOKEN_ENV, None)
        # Explicit: `ray start` only turns token auth on by itself when a token already exists.
        env[AUTH_MODE_ENV] = "token"
        env[AUTH_TOKEN_PATH_ENV] = str(self.token_path)
        env.pop("RAY_ADDRESS", None)  # a head must not try to join another cluster
        # Jobs run `python ...` from the head's PATH: make it this interpreter's environment,
        # so a venv works without being activated.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def _wait_until_ready(self) -> None:
        """Poll the job API (which needs the token) until it answers, or fail with the log tail."""
        assert self._process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        request = urllib.request.Request(f"{self.dashboard_url}/api/jobs/", headers=self.auth_headers())
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise HeadStartError(f"`ray start --head` exited with {self._process.returncode}:\n"
                                     f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as error:
                if error.code in (401, 403):  # up, but refuses our token: waiting will not help
                    raise HeadStartError(f"head refused the token from {self.token_path}: {error}") from error
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet
            time.sleep(1.0)
        raise HeadStartError(f"head not ready after {self.ready_timeout_s:.0f}s:\n{self.log_tail()}")


def session_members(sid: int) -> list[int]:
    """Ids of the live processes in session `sid` (Linux /proc; empty elsewhere)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # Fields after the parenthesised command name: state ppid pgrp session ...
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _signal_process(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group is already gone


def main(argv: list[str] | None = None) -> int:
    """`python -m facetune.cluster.local_head`: a local head for trying `ray job submit`; Ctrl-C stops it."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--num-gpus", type=int, default=0)
    args = parser.parse_args(argv)
    # SIGTERM ends the head like Ctrl-C does: through the context manager's stop().
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with LocalHead(num_cpus=args.num_cpus, num_gpus=args.num_gpus) as head:
        print(f"Ray head up (token auth on). In another shell:\n"
              f"  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={head.token_path}\n"
              f"  ray job submit --address {head.dashboard_url} --working-dir . -- python jobs/tune_all.py ...\n"
              f"Dashboard: {head.dashboard_url}   Ctrl-C stops the head.", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
