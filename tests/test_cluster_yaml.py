"""cluster.yaml: a valid Ray cluster-launcher config with a CPU head, autoscaling GPU workers,
facetune installed at the project's version, and token authentication kept on."""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

import ray

REPO_ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = REPO_ROOT / "cluster.yaml"
RAY_SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _all_commands(cluster: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    return [command for key in keys for command in cluster.get(key) or []]


def test_cluster_yaml_is_valid_against_rays_own_schema(cluster):
    schema = json.loads(RAY_SCHEMA.read_text())
    jsonschema.validate(cluster, schema)


def test_head_is_a_cpu_node_that_runs_no_trials(cluster):
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"].get("CPU") == 0


def test_gpu_workers_autoscale_from_zero(cluster):
    workers = [spec for name, spec in cluster["available_node_types"].items() if name != cluster["head_node_type"]]
    gpu_workers = [spec for spec in workers if spec["resources"].get("GPU", 0) >= 1]
    assert len(gpu_workers) == 1
    assert gpu_workers[0]["min_workers"] == 0
    assert 0 < gpu_workers[0]["max_workers"] <= cluster["max_workers"]


def test_setup_installs_facetune_at_the_version_in_pyproject(cluster):
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    wheel = f"facetune-{version}-py3-none-any.whl"
    installs = [command for command in cluster["setup_commands"] if command.startswith("pip install")]
    assert any(command.endswith(f"/{wheel}") for command in installs), installs
    # The wheel reaches the nodes through file_mounts (built into ./dist by `pip wheel`).
    assert cluster["file_mounts"]["/home/ray/facetune/dist"] == "./dist"


def test_container_pins_the_ray_and_python_versions_facetune_needs(cluster):
    for image in (cluster["docker"]["image"], cluster["docker"]["head_image"]):
        assert image.startswith(f"rayproject/ray:{ray.__version__}-py311-"), image


def test_every_node_starts_ray_with_token_auth_and_gets_the_token(cluster):
    starts = cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]
    ray_starts = [command for command in starts if "ray start" in command]
    assert len(ray_starts) == 2
    assert all("RAY_AUTH_MODE=token ray start" in command for command in ray_starts)
    assert cluster["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"


def test_nothing_disables_auth_or_exposes_the_dashboard(cluster):
    text = CLUSTER_YAML.read_text()
    assert "RAY_AUTH_MODE=disabled" not in text
    for command in _all_commands(cluster):
        assert not re.search(r"--dashboard-host[= ]0\.0\.0\.0", command), command


def test_documented_submit_command_writes_results_to_s3():
    submit_lines = [line for line in CLUSTER_YAML.read_text().splitlines() if "--results" in line]
    assert submit_lines and all("--results s3://" in line for line in submit_lines)
