"""raycfg/serve.yaml, the app builder and the command's seams, without starting Ray."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from facetune.cli import main
from facetune.serve.app import FaceService, ServeSettings, build_app
from facetune.serve.inference import load_predictor

SERVE_YAML = Path(__file__).resolve().parent.parent / "raycfg" / "serve.yaml"


def test_serve_yaml_is_a_valid_serve_config_that_builds_the_app():
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(SERVE_YAML.read_text()))
    [app] = config.applications
    assert app.import_path == "facetune.serve.app:build_app"
    assert config.http_options.host == "127.0.0.1"
    application = build_app(app.args)
    deployment = application._bound_deployment
    assert deployment.name == FaceService.name
    assert deployment._deployment_config.autoscaling_config.max_replicas == app.args["max_replicas"]
    assert deployment._deployment_config.max_ongoing_requests > app.args["max_batch_size"]


def test_unknown_settings_and_bad_replica_bounds_are_refused():
    with pytest.raises(ValueError, match="unknown serve settings"):
        ServeSettings.from_args({"max_batchsize": 8})
    with pytest.raises(ValueError, match=r"max_replicas 2: must be at least min_replicas \(3\)"):
        build_app({"min_replicas": 3, "max_replicas": 2})


@pytest.mark.parametrize("key, value, message", [
    ("max_batch_size", 0, "max_batch_size 0: must be at least 1"),
    ("min_replicas", 0, "min_replicas 0: must be at least 1"),
    ("batch_wait_timeout_s", -0.1, "batch_wait_timeout_s -0.1: must be at least 0"),
    ("replica_cpus", -1, "replica_cpus -1: must be at least 0"),
    ("target_ongoing_requests", 0, "target_ongoing_requests 0: must be above 0"),
])
def test_a_setting_out_of_range_is_refused_before_any_replica_starts(key, value, message):
    with pytest.raises(ValueError, match=rf"^{re.escape(message)}$"):
        ServeSettings.from_args({key: value})


def test_serve_command_refuses_a_batch_size_of_zero_before_starting_ray(monkeypatch, capsys):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    assert main(["serve", "--max-batch-size", "0"]) == 2
    assert capsys.readouterr().err.strip() == "facetune serve: max_batch_size 0: must be at least 1"


def test_a_misspelt_device_in_a_serve_config_is_refused_before_any_replica_starts():
    with pytest.raises(ValueError, match=r"^device gpu: not a device name"):
        ServeSettings.from_args({"device": "gpu"})


def test_without_models_the_shipped_ones_answer_every_task():
    predictor = load_predictor(None, device="cpu")
    assert predictor.tasks == ("age", "gender", "ethnicity")


def test_serve_command_explains_a_missing_models_dir_in_one_line(tmp_path, capsys):
    assert main(["serve", "--models", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("facetune serve:") and "summary.json" in err and "\n" not in err


def test_serve_command_without_models_or_shipped_ones_says_what_to_pass(monkeypatch, tmp_path, capsys):
    import facetune.release.paths

    monkeypatch.setattr(facetune.release.paths, "PRETRAINED_DIR", tmp_path)
    assert main(["serve"]) == 2
    assert "pass --models RESULTS_DIR" in capsys.readouterr().err


def test_serve_command_refuses_a_port_in_use_before_starting_ray(monkeypatch, capsys):
    import socket

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"facetune serve: cannot listen on 127.0.0.1:{port}") and "\n" not in err


def test_serve_command_refuses_a_port_out_of_range(monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port 70000: not a TCP port" in capsys.readouterr().err
