"""`ray job submit` against a real local head (127.0.0.1, free ports, token auth on).

The head is started with `ray start --head --block` in its own process group and stopped by
that group when the module ends, also when a test fails.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from facetune.cluster.local_head import LocalHead, ray_executable
from facetune.tuning.profiles import combinations as profile_combinations
from facetune.tuning.profiles import load_profile
from facetune.tuning.sweep import result_tasks

pytestmark = pytest.mark.slow  # a real Ray head and `ray job submit` runs

REPO_ROOT = Path(__file__).resolve().parent.parent
# .gitignore keeps .venv, build outputs and results out of the upload; .git is not in it.
RUNTIME_ENV_JSON = json.dumps({"excludes": [".git"]})
JOB_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def head():
    with LocalHead(num_cpus=2, fresh_token=True) as started:
        yield started


@pytest.fixture(scope="module")
def job_client(head):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(head.dashboard_url, headers=head.auth_headers())


def submit(head: LocalHead, entrypoint: list[str], env: dict[str, str],
           submission_id: str) -> subprocess.CompletedProcess:
    command = [ray_executable(), "job", "submit", "--address", head.dashboard_url, "--submission-id", submission_id,
               "--working-dir", str(REPO_ROOT), "--runtime-env-json", RUNTIME_ENV_JSON, "--no-wait",
               "--", *entrypoint]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def wait_for_end(job_client, submission_id: str, timeout_s: float) -> str:
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = job_client.get_job_status(submission_id)
        if status.is_terminal():
            return str(status.value)
        time.sleep(2)
    job_client.stop_job(submission_id)
    pytest.fail(f"job {submission_id} still {JobStatus(status).value} after {timeout_s}s:\n"
                f"{job_client.get_job_logs(submission_id)[-3000:]}")


@pytest.fixture(scope="module")
def submitted_sweep(head, job_client, prepared_data, tmp_path_factory):
    """The smoke sweep submitted with `ray job submit`, run to its end: (status, results dir, id)."""
    results = tmp_path_factory.mktemp("submitted") / "results"
    submission_id = f"facetune-smoke-{uuid.uuid4().hex[:8]}"
    entrypoint = ["python", "jobs/tune_all.py", "--profile", "smoke",
                  "--data", str(Path(prepared_data).resolve()), "--results", str(results)]
    submitted = submit(head, entrypoint, head.client_env(), submission_id)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    status = wait_for_end(job_client, submission_id, JOB_TIMEOUT_S)
    return status, results, submission_id


def test_submitted_smoke_sweep_succeeds(submitted_sweep, job_client):
    status, _, submission_id = submitted_sweep
    assert status == "SUCCEEDED", job_client.get_job_logs(submission_id)[-3000:]


def test_submitted_sweep_writes_every_combination_of_the_profile(submitted_sweep):
    _, results, _ = submitted_sweep
    summary = json.loads((results / "summary.json").read_text())
    combinations = {(entry["family"], entry["task"]) for entry in summary}
    assert combinations == {(family, t) for family, task in profile_combinations(load_profile("smoke"))
                            for t in result_tasks(task)}
    for entry in summary:
        folder = results / f"{entry['family']}_{entry['task']}"
        assert (folder / "model.pt").is_file() and (folder / "trials.csv").is_file()
        assert (results / entry["checkpoint"]).is_file()


def test_uploaded_working_dir_has_the_code_but_no_venv_or_git(submitted_sweep, head):
    uploads = list(head.temp_dir.glob("session_*/runtime_resources/working_dir_files/*/"))
    assert uploads, f"no unpacked working_dir under {head.temp_dir}"
    for upload in uploads:
        assert (upload / "jobs" / "tune_all.py").is_file()
        assert (upload / "facetune" / "__init__.py").is_file()
        assert not (upload / ".venv").exists()
        assert not (upload / ".git").exists()


def test_report_job_runs_under_job_submit_on_the_sweeps_results(submitted_sweep, head, job_client, tmp_path):
    _, results, _ = submitted_sweep
    submission_id = f"facetune-report-{uuid.uuid4().hex[:8]}"
    submitted = submit(head, ["python", "jobs/report.py", str(results), "--out", str(tmp_path / "report")],
                       head.client_env(), submission_id)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    status = wait_for_end(job_client, submission_id, 180)
    assert status == "SUCCEEDED", job_client.get_job_logs(submission_id)[-3000:]
    assert (tmp_path / "report" / "report.md").is_file()


def _env_without_token(head: LocalHead, home: Path) -> dict[str, str]:
    env = head.client_env()
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN"):
        env.pop(name, None)
    env["HOME"] = str(home)  # no ~/.ray/auth_token to fall back on
    return env


def test_submission_without_a_token_is_refused(head, job_client, tmp_path):
    submission_id = f"facetune-no-token-{uuid.uuid4().hex[:8]}"
    refused = submit(head, ["python", "-c", "print('should never run')"], _env_without_token(head, tmp_path),
                     submission_id)
    assert refused.returncode != 0
    assert "401" in refused.stderr + refused.stdout or "Unauthorized" in refused.stderr + refused.stdout
    assert submission_id not in {job.submission_id for job in job_client.list_jobs()}


def test_submission_with_a_wrong_token_is_refused(head, job_client, tmp_path):
    submission_id = f"facetune-bad-token-{uuid.uuid4().hex[:8]}"
    env = _env_without_token(head, tmp_path)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64)
    refused = submit(head, ["python", "-c", "print('should never run')"], env, submission_id)
    assert refused.returncode != 0
    assert "403" in refused.stderr + refused.stdout or "Forbidden" in refused.stderr + refused.stdout
    assert submission_id not in {job.submission_id for job in job_client.list_jobs()}


def listening_sockets(head: LocalHead) -> set[tuple[str, int]]:
    """(ip, port) of every listening TCP socket of the head's processes (its session)."""
    import ray  # noqa: F401  -- puts Ray's bundled psutil on sys.path
    import psutil

    listening = set()
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) != head.pgid:
                continue
            listening |= {(conn.laddr.ip.removeprefix("::ffff:"), conn.laddr.port)
                          for conn in process.net_connections(kind="inet") if conn.status == psutil.CONN_LISTEN}
        except (psutil.Error, ProcessLookupError):
            continue  # exited meanwhile
    return listening


def test_dashboard_and_job_server_listen_on_loopback_only(head):
    dashboard_port = int(head.dashboard_url.rsplit(":", 1)[1])
    assert {ip for ip, port in listening_sockets(head) if port == dashboard_port} == {"127.0.0.1"}


def test_job_agent_reachable_beyond_loopback_demands_the_token(head):
    # Ray binds its node agent to the node's address, not loopback; the token must guard it.
    agent_port = head.ports["--dashboard-agent-listen-port"]
    outside = sorted(ip for ip, port in listening_sockets(head) if port == agent_port and ip != "127.0.0.1")
    assert outside, "the job agent listens on loopback only"
    request = urllib.request.Request(f"http://{outside[0]}:{agent_port}/api/job_agent/jobs/", method="POST",
                                     data=json.dumps({"entrypoint": "echo should-never-run"}).encode(),
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401


def test_cgan_job_runs_under_job_submit_with_the_sweeps_age_model(submitted_sweep, head, job_client, prepared_data,
                                                                   tmp_path):
    _, results, _ = submitted_sweep
    cgan_results = tmp_path / "cgan"
    submission_id = f"facetune-cgan-{uuid.uuid4().hex[:8]}"
    entrypoint = ["python", "jobs/train_cgan.py", "--profile", "smoke", "--data", str(Path(prepared_data).resolve()),
                  "--results", str(cgan_results), "--age-model", str(results)]
    submitted = submit(head, entrypoint, head.client_env(), submission_id)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    status = wait_for_end(job_client, submission_id, JOB_TIMEOUT_S)
    assert status == "SUCCEEDED", job_client.get_job_logs(submission_id)[-3000:]
    assert (cgan_results / "generator.pt").is_file()
    assert sorted(p.name for p in (cgan_results / "samples").glob("epoch_*.png"))
    metrics = json.loads((cgan_results / "metrics.json").read_text())
    assert "age_mae_generated" in json.dumps(metrics)
