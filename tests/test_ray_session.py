"""facetune.ray_session: a private local Ray that is gone afterwards, the cluster named by
RAY_ADDRESS when there is one, and a one-line refusal within seconds when that address is dead.

The drivers run in subprocesses: the test session may hold its own Ray, which the helper would
(rightly) reuse.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray._raylet  # noqa: F401  (the GCS probe's client; imported here so timings leave it out)

pytestmark = pytest.mark.slow  # every test here starts Ray (in a subprocess)

from facetune.cli import build_parser, main
from facetune.cluster.local_head import HeadStartError, LocalHead
from facetune.errors import EXIT_USAGE, UsageError
from facetune.ray_session import check_reachable, ray_session

REPO = Path(__file__).resolve().parent.parent


def dead_address() -> str:
    """127.0.0.1:PORT where nothing listens (a port just freed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


#: What Ray says when its raylet missed its fixed 30 s to register (a saturated machine).
RAY_START_TIMEOUT = "timed out during startup"


def run_driver(code: str, env: dict[str, str]) -> list[str]:
    """Run `code` in a fresh Python with the repo importable; its stdout words. A Ray start-up
    time-out (the machine was saturated) is retried once."""
    env = {**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for attempt in (1, 2):
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        if done.returncode == 0 or RAY_START_TIMEOUT not in done.stderr or attempt == 2:
            break
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text` (Ray's processes name their temp dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:  # gone meanwhile
            continue
    return found


def test_a_local_run_starts_its_own_ray_ignoring_a_stale_record_and_leaves_nothing_behind():
    # Ray's temp folder records a cluster that died (a `ray start --head` killed by a signal);
    # Ray's default would join it and hang on GCS time-outs.
    temp = Path(tempfile.mkdtemp(prefix="ft-rs-", dir="/tmp"))  # short: Ray puts sockets in it
    stale = dead_address()
    (temp / "ray").mkdir()
    (temp / "ray" / "ray_current_cluster").write_text(stale)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(temp)}
    code = (
        "import ray\n"
        "from facetune.ray_session import ray_session\n"
        "try:\n"
        "    with ray_session(num_cpus=1, include_dashboard=False, log_to_driver=False):\n"
        "        print(ray.get_runtime_context().gcs_address)\n"
        "        raise RuntimeError('a failing run')\n"
        "except RuntimeError:\n"
        "    print(ray.is_initialized())\n"
    )
    try:
        gcs_address, still_initialised = run_driver(code, env)
        assert gcs_address != stale
        assert still_initialised == "False"
        deadline = time.monotonic() + 30
        while processes_mentioning(str(temp)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert processes_mentioning(str(temp)) == []
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    with pytest.raises(UsageError):
        check_reachable(gcs_address, "--address", timeout_s=1.0)


@pytest.fixture
def head():
    """A `ray start --head` with its own temp folder and token; one retry on a start-up time-out."""
    for attempt in (1, 2):
        try:
            started = LocalHead(num_cpus=1, fresh_token=True).start()
            break
        except HeadStartError:
            if attempt == 2:
                raise
    try:
        yield started
    finally:
        started.stop()


def test_a_live_cluster_passes_the_address_check(head):
    env = head.client_env() | {"RAY_ADDRESS": head.gcs_address}
    code = "from facetune.ray_session import check_address\ncheck_address()\nprint('answered')\n"
    assert run_driver(code, env) == ["answered"]


@pytest.mark.parametrize("flag", [None, "10.0.0.9:6379"])
def test_ray_address_or_the_flag_is_the_cluster_joined_and_only_disconnected_after(flag, monkeypatch):
    import ray

    calls: list[tuple] = []
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.8:6379")
    monkeypatch.setattr("ray.is_initialized", lambda: False)
    monkeypatch.setattr("facetune.ray_session.check_reachable", lambda address, origin: calls.append(("probe", address, origin)))
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(("init", kwargs)))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append(("shutdown",)))
    with ray_session(flag, num_cpus=1):  # a joined cluster keeps its own resources: num_cpus is not passed
        pass
    expected, origin = (flag, "--address") if flag else ("10.0.0.8:6379", "RAY_ADDRESS")
    assert calls == [("probe", expected, origin), ("init", {"address": expected, "log_to_driver": True}), ("shutdown",)]


def test_a_dead_ray_address_fails_the_sweep_within_seconds_in_one_line(tmp_path, prepared_data, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", dead_address())
    monkeypatch.setattr("ray.is_initialized", lambda: False)  # as in a fresh process
    build_parser()
    import facetune.tuning.sweep  # noqa: F401  (imports are not what is timed)

    started = time.monotonic()
    code = main(["tune", "--profile", "smoke", "--data", str(prepared_data), "--results", str(tmp_path / "r")])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert err.count("\n") == 1
    assert f"facetune tune: RAY_ADDRESS {os.environ['RAY_ADDRESS']}: no Ray cluster answers" in err
    assert elapsed < 30  # Ray's own GCS time-outs take minutes; the probe gives up after 3 s


def test_an_address_that_never_answers_gives_up_after_the_timeout(monkeypatch):
    monkeypatch.setattr("ray.is_initialized", lambda: False)
    started = time.monotonic()
    # 203.0.113.0/24 is reserved for documentation: no Ray runs there.
    with pytest.raises(UsageError, match=r"--address 203\.0\.113\.1:6379: no Ray cluster answers"):
        with ray_session("203.0.113.1:6379"):
            pass
    assert time.monotonic() - started < 6


def test_an_address_without_a_port_is_refused():
    with pytest.raises(UsageError, match="not a Ray address"):
        check_reachable("somehost", "--address")
