"""A sweep profile is checked whole before Ray starts (facetune.tuning.plan), and `--dry-run`
prints the plan without starting Ray."""
from __future__ import annotations

import functools
import re

import pytest

from facetune.cli import main
from facetune.config_files import raycfg_dir
from facetune.errors import InvalidInputError
from facetune.tuning.cost import CombinationCost, epochs_bounds, measure_epoch_seconds
from facetune.tuning.plan import SweepPlan, plan_sweep
from facetune.tuning.profiles import load_profile, rehearsal

SHIPPED_PROFILES = sorted(p.stem for p in (raycfg_dir() / "profiles").glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def shipped_plan(profile_name: str) -> SweepPlan:
    """A shipped profile's plan, made once per session (the gpu profile builds 130 model shapes)."""
    return plan_sweep(load_profile(profile_name), profile_name, cpus=2)


@pytest.fixture
def ray_must_not_start(monkeypatch):
    """Any attempt to start Ray fails the test."""
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture
def instant_epochs(monkeypatch):
    """Dry runs without timing real models (the timing has its own test)."""
    import facetune.tuning.cost as cost

    monkeypatch.setattr(cost, "measure_epoch_seconds", lambda plan, combination, train_rows, seed=0: 1.0)


def tune(tmp_path, *args: str) -> list[str]:
    return ["tune", "--results", str(tmp_path / "results"), *args]


def test_a_grace_period_above_a_familys_epochs_is_refused_naming_both(tmp_path, capsys, ray_must_not_start):
    code = main(tune(tmp_path, "--profile", "local", "--set", "scheduler.grace_period=9"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert re.search(r"local\.yaml with --set scheduler\.grace_period=9: scheduler\.grace_period 9 is more than "
                     r"\w+'s max_epochs \d+", err)
    assert not (tmp_path / "results").exists()


def test_a_user_profile_file_with_that_mistake_is_refused_naming_the_file(tmp_path, capsys, ray_must_not_start):
    path = tmp_path / "mine.yaml"
    path.write_text("num_samples: {cnn: 2, resnet: 1}\nmax_epochs: {cnn: 10, resnet: 3}\n"
                    "scheduler: {type: asha, grace_period: 5, reduction_factor: 2}\n")
    code = main(tune(tmp_path, "--profile", str(path)))
    err = capsys.readouterr().err
    assert code == 2
    assert "mine.yaml: scheduler.grace_period 5 is more than resnet's max_epochs 3" in err


def test_a_trial_asking_more_cpus_than_the_machine_has_is_refused():
    profile = load_profile("smoke", ["trial_resources.cpu=3"])
    with pytest.raises(InvalidInputError, match=r"trial_resources\.cpu 3 is more than this machine's 2 CPUs"):
        plan_sweep(profile, "smoke", cpus=2)


def test_a_cluster_run_does_not_check_cpus_against_this_machine():
    profile = load_profile("smoke", ["trial_resources.cpu=3", "torch_threads=3"])
    assert plan_sweep(profile, "smoke", cpus=None).combinations


def test_more_torch_threads_than_trial_cpus_is_refused():
    profile = load_profile("smoke", ["torch_threads=2"])
    with pytest.raises(InvalidInputError, match=r"torch_threads 2 is more than trial_resources\.cpu 1"):
        plan_sweep(profile, "smoke", cpus=2)


def test_more_pca_components_than_rows_is_refused():
    profile = load_profile("smoke", ["row_limit=10", "pca_components=16"])
    with pytest.raises(InvalidInputError, match=r"pca_components 16 is more than row_limit 10 allows \(at most 10\)"):
        plan_sweep(profile, "smoke", cpus=2)


def test_more_trials_than_a_search_space_holds_is_refused(tmp_path):
    path = tmp_path / "narrow.yaml"
    path.write_text("preset: paper\nnum_samples: {cnn: 2}\nmax_epochs: {cnn: 3}\n")
    with pytest.raises(InvalidInputError, match=r"num_samples\.cnn 2 is more than the 1 distinct configs of cnn_age"):
        plan_sweep(load_profile(str(path)), str(path), cpus=2)


def test_a_model_that_cannot_build_is_refused_naming_its_combination():
    # Seven 2x2 pools shrink a 48-pixel face to nothing.
    profile = load_profile("smoke", ["overrides.cnn.arch.conv_channels=[4,4,4,4,4,4,4]"])
    with pytest.raises(InvalidInputError, match=r"cnn_age: a sampled model does not build"):
        plan_sweep(profile, "smoke", cpus=2)


@pytest.mark.parametrize("profile_name", SHIPPED_PROFILES)
def test_every_shipped_profile_plans_every_trial(profile_name):
    plan = shipped_plan(profile_name)
    assert plan.combinations
    for combination in plan.combinations:
        assert len(combination.configs) == combination.num_trials
        assert all(config["max_epochs"] == combination.max_epochs for config in combination.configs)


def test_the_plans_rungs_are_the_ones_ray_places():
    plan = shipped_plan("local")
    schedulers = plan.schedulers()
    for combination in plan.combinations:
        ray_rungs = sorted(milestone for milestone, _ in schedulers[combination.name]._brackets[0]._rungs)
        assert plan.rungs(combination) == [r for r in ray_rungs if r < combination.max_epochs]


def test_epoch_bounds_count_asha_keeping_one_trial_in_reduction_factor_at_each_rung():
    profile = load_profile("smoke", ["num_samples=4", "max_epochs=8", "scheduler.grace_period=2"])
    plan = plan_sweep(profile, "smoke", only=["cnn/age"], cpus=2)
    (combination,) = plan.combinations
    # rungs 2 and 4: 4 trials to epoch 2, 2 to epoch 4, 1 to epoch 8
    assert epochs_bounds(plan, combination) == (32, 4 * 2 + 2 * 2 + 1 * 4)
    cost = CombinationCost("cnn_age", 3.0, 32, 16)
    assert (cost.most_seconds, cost.least_seconds) == (96.0, 48.0)


def test_a_rehearsal_keeps_every_combination_with_one_short_trial_each():
    profile = load_profile("local")
    cut, source = rehearsal(profile, "local")
    full, short = shipped_plan("local"), plan_sweep(cut, source, cpus=2)
    assert short.pairs == full.pairs
    assert all(c.num_trials == 1 and c.max_epochs == 1 for c in short.combinations)
    assert cut["row_limit"] == 1500 and cut["scheduler"]["grace_period"] == 1
    assert "--rehearse" in source


@pytest.mark.parametrize("profile_name", SHIPPED_PROFILES)
def test_every_shipped_profile_dry_runs_without_starting_ray(profile_name, tmp_path, capsys, prepared_data,
                                                            ray_must_not_start, instant_epochs):
    code = main(tune(tmp_path, "--profile", profile_name, "--data", str(prepared_data), "--dry-run"))
    out = capsys.readouterr().out
    assert code == 0
    for combination in shipped_plan(profile_name).combinations:
        assert re.search(rf"^{combination.name} +{combination.num_trials} +{combination.max_epochs} ", out, re.M)
    assert "wall time here:" in out and "Ray not started" in out
    assert not (tmp_path / "results").exists()


# Every `--set` the README and docs/sweep.md show for `facetune tune`.
README_SETTINGS = [
    ["max_epochs=6"],
    ["train.lr=0.001"],
    ["overrides.cnn.arch.dense=[64]"],
]


@pytest.mark.parametrize("settings", README_SETTINGS, ids=" ".join)
def test_the_documented_set_values_dry_run(settings, tmp_path, capsys, prepared_data, ray_must_not_start,
                                           instant_epochs):
    args = [arg for setting in settings for arg in ("--set", setting)]
    assert main(tune(tmp_path, "--profile", "local", "--data", str(prepared_data), "--dry-run", *args)) == 0
    assert "Ray not started" in capsys.readouterr().out


def test_a_dry_run_times_each_combinations_epoch_here(tmp_path, capsys, prepared_data, ray_must_not_start):
    code = main(tune(tmp_path, "--profile", "smoke", "--data", str(prepared_data), "--dry-run", "--only", "cnn/age",
                     "dnn/gender"))
    out = capsys.readouterr().out
    assert code == 0
    assert len(re.findall(r"^(?:cnn_age|dnn_gender) .* \d+\.\ds ", out, re.M)) == 2


def test_an_epoch_is_timed_on_random_faces_and_scaled_to_the_split():
    plan = plan_sweep(load_profile("smoke"), "smoke", only=["cnn/age"], cpus=2)
    (combination,) = plan.combinations
    small, large = (measure_epoch_seconds(plan, combination, rows) for rows in (1_000, 100_000))
    assert 0 < small < large
