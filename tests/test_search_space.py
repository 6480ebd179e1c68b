"""Search spaces and profiles are data: every shipped profile resolves to valid Tune spaces."""
from __future__ import annotations

import pytest
from ray import tune

from facetune.config_files import raycfg_dir
from facetune.tuning.profiles import combinations, load_profile
from facetune.records import TASK_NAMES
from facetune.tuning.space import combination_config, param_space, to_distribution

SHIPPED_PROFILES = sorted(p.stem for p in (raycfg_dir() / "profiles").glob("*.yaml"))


def test_distribution_specs_become_tune_domains():
    assert isinstance(to_distribution({"loguniform": [1e-4, 1e-2]}), tune.search.sample.Float)
    assert isinstance(to_distribution({"choice": [[8], [16, 8]]}), tune.search.sample.Categorical)
    assert to_distribution([32, 64]) == [32, 64]


def test_unknown_distribution_is_an_error():
    with pytest.raises(ValueError, match="unknown distribution"):
        to_distribution({"lognormal": [0, 1]})


@pytest.mark.parametrize("profile_name", SHIPPED_PROFILES)
def test_every_profile_configures_each_family_it_sizes(profile_name):
    profile = load_profile(profile_name)
    pairs = combinations(profile)
    assert {family for family, _ in pairs} == set(profile["num_samples"])
    for family, task in pairs:
        base, space = combination_config(family, task, profile)
        assert base["family"] == family and base["task"] == task
        assert {"arch", "train"} <= set(base)
        for dotted in space:
            assert dotted.split(".")[0] in ("arch", "train"), dotted


def test_profile_fixed_overrides_remove_the_tuned_key():
    profile = {"overrides": {"cnn": {"arch.dense": [32]}}}
    base, space = combination_config("cnn", "gender", profile)
    assert base["arch"]["dense"] == [32]
    assert "arch.dense" not in space


def test_space_overrides_can_drop_and_add_keys():
    profile = {"space_overrides": {"cnn": {"all": {"train.lr": None},
                                           "ethnicity": {"arch.kernel_size": {"choice": [3, 5]}}}}}
    _, gender_space = combination_config("cnn", "gender", profile)
    _, ethnicity_space = combination_config("cnn", "ethnicity", profile)
    assert "train.lr" not in gender_space
    assert ethnicity_space["arch.kernel_size"] == {"choice": [3, 5]}
    assert "arch.kernel_size" not in gender_space


def test_param_space_nests_tuned_keys():
    base, space = combination_config("dnn", "ethnicity", {})
    config = param_space(base, space)
    assert isinstance(config["train"]["lr"], tune.search.sample.Float)
    assert isinstance(config["train"]["class_weighting"], tune.search.sample.Categorical)
    assert base["train"]["lr"] == 1.0e-3  # the base is not modified


def test_combinations_can_be_narrowed_and_reject_typos():
    profile = load_profile("smoke")
    assert combinations(profile, ["cnn/age", "dnn/gender"]) == [("cnn", "age"), ("dnn", "gender")]
    with pytest.raises(ValueError, match="unknown combination"):
        combinations(profile, ["cnn/height"])


SEARCH_FILES = sorted(p.stem for p in (raycfg_dir() / "search").glob("*.yaml"))


@pytest.mark.parametrize("profile_name", SHIPPED_PROFILES)
@pytest.mark.parametrize("family", SEARCH_FILES)
def test_every_shipped_search_space_samples_into_a_model_and_a_train_config(profile_name, family):
    """Every search file x task, narrowed or widened by each profile's overrides and
    space_overrides (a preset profile: its own entries), samples into a TrainConfig and a model."""
    import random

    from facetune.config_files import set_dotted
    from facetune.models import build_model
    from facetune.models.registry import age_distribution_context
    from facetune.tasks import MULTITASK
    from facetune.training import TrainConfig

    profile = load_profile(profile_name)
    tasks = [MULTITASK] if family == "multitask" else list(TASK_NAMES)
    pairs = [(f, t) for f, t in combinations(profile) if f == family] if profile["preset"] else [(family, t) for t in tasks]
    if not pairs:
        pytest.skip(f"preset profile {profile_name} has no {family} entries")
    random.seed(0)
    for family, task in pairs:
        base, space = combination_config(family, task, profile)
        for dotted, spec in space.items():
            domain = to_distribution(spec)
            set_dotted(base, dotted, domain.sample() if hasattr(domain, "sample") else domain)
        train = TrainConfig.from_dict(base["train"])
        context = {"target_mean": 30.0, "target_std": 20.0} | age_distribution_context(train.loss)
        if family == "pca_dnn":
            context["n_components"] = 8
        model = build_model(family, base["arch"], task, context)
        assert sum(p.numel() for p in model.parameters()) > 0


def test_a_profile_value_out_of_range_is_named_with_its_family(tmp_path):
    from facetune.errors import InvalidInputError

    path = tmp_path / "tiny.yaml"
    path.write_text("num_samples: {cnn: 2, dnn: 0}\nmax_epochs: 1\n")
    with pytest.raises(InvalidInputError, match=r"tiny\.yaml: num_samples\.dnn 0: must be a whole number >= 1$"):
        load_profile(str(path))
