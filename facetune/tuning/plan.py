"""A sweep's plan: the profile checked whole, before Ray starts, data is prepared or PCA fitted.

`plan_sweep` resolves every combination of a profile (search space, fixed settings, epochs,
trials), checks the values that only make sense together (ASHA's grace period against each
family's epochs, trial resources against this machine, PCA components against the rows),
builds the schedulers Tune will use, samples every trial config and builds each distinct model
once on a dummy batch. Whatever Tune, Ray or a builder would refuse an hour later is refused
here in one line. The sweep then runs exactly this plan (configs, schedulers), so nothing is
resolved twice.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facetune.errors import InvalidInputError
from facetune.models import build_model, make_context
from facetune.models.pca import PCAParams
from facetune.records import DEFAULT_INPUT_SPEC, MULTITASK, InputSpec, combination_name
from facetune.tasks import TASKS
from facetune.training.loop import TrainConfig
from facetune.tuning.best_trial import MULTITASK_METRIC, MULTITASK_MODE, validation_metric
from facetune.tuning.pool import combination_seed, sample_configs
from facetune.tuning.profiles import combinations, per_family
from facetune.tuning.space import combination_config, param_space


@dataclass
class CombinationPlan:
    """One (family, task) search: what its trials are chosen by and the configs they run."""

    family: str
    task: str
    metric: str
    mode: str
    num_trials: int
    max_epochs: int
    base: dict[str, Any]
    space: dict[str, Any]
    configs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return combination_name(self.family, self.task)


@dataclass
class SweepPlan:
    """A checked profile and every combination it runs, in the sweep's order."""

    profile: dict[str, Any]
    source: str
    combinations: list[CombinationPlan]
    #: The layout of the faces swept (facetune.data.prepare.planned_spec), which every model is built for.
    input_spec: InputSpec = DEFAULT_INPUT_SPEC

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(c.family, c.task) for c in self.combinations]

    @property
    def scheduler_settings(self) -> dict[str, Any]:
        """ASHA's keyword arguments other than the per-combination metric, mode and max_t."""
        return {k: v for k, v in self.profile["scheduler"].items() if k != "type"}

    def schedulers(self) -> dict[str, Any]:
        """One ASHA scheduler per combination (its own metric, mode and epoch budget)."""
        from ray.tune.schedulers import ASHAScheduler

        built = {}
        for c in self.combinations:
            try:
                built[c.name] = ASHAScheduler(time_attr="training_iteration", metric=c.metric, mode=c.mode,
                                              max_t=c.max_epochs, **self.scheduler_settings)
            except (AssertionError, TypeError, ValueError) as err:
                raise InvalidInputError(f"{self.source}: scheduler for {c.name}: {err or 'refused by Ray Tune'}") \
                    from None
        return built

    def rungs(self, combination: CombinationPlan) -> list[int]:
        """The epochs at which ASHA compares `combination`'s trials (grace period, times the
        reduction factor, below max_epochs), as Ray's ASHAScheduler places them."""
        grace, factor = self.scheduler_settings["grace_period"], self.scheduler_settings["reduction_factor"]
        count = int(math.log(combination.max_epochs / grace, factor) + 1e-9) + 1 if combination.max_epochs >= grace else 0
        return [int(grace * factor ** k) for k in range(count) if grace * factor ** k < combination.max_epochs]

    def slots(self, cpus: float | None) -> int | None:
        """Trials that run at once: max_concurrent_trials, capped by the CPUs when known."""
        wanted = self.profile.get("max_concurrent_trials")
        fit = int(cpus // float(self.profile["trial_resources"]["cpu"])) if cpus else None
        if wanted and fit:
            return min(int(wanted), fit)
        return int(wanted) if wanted else fit


def local_cpus(address: str | None) -> int | None:
    """The CPUs a sweep started here gets: this machine's, or None on a cluster (known once Ray is up)."""
    if address or os.environ.get("RAY_ADDRESS"):
        return None
    return os.cpu_count()


def plan_sweep(profile: dict[str, Any], source: str, only: list[str] | None = None,
               cpus: int | None = None, input_spec: InputSpec = DEFAULT_INPUT_SPEC) -> SweepPlan:
    """Check `profile` (already loaded and schema-checked, see facetune.tuning.profiles) as a
    whole and return its plan; raise InvalidInputError naming `source` and the key otherwise.

    `cpus`: the CPUs of the machine the trials run on, when known (a local run), so that a
    trial asking more than there are is refused instead of waiting for ever. `input_spec`: the
    layout of the faces to be swept, which every sampled model is built for.
    """

    pairs = combinations(profile, only)
    plan = SweepPlan(profile, source, [_combination(family, task, profile) for family, task in pairs], input_spec)
    _check_together(plan, cpus)
    plan.schedulers()  # Ray's own assertions, here rather than after Ray has started
    for c in plan.combinations:
        try:
            c.configs = sample_configs(param_space(c.base, c.space), c.num_trials, combination_seed(c.name))
        except (TypeError, ValueError) as err:
            raise InvalidInputError(f"{source}: {c.name}: cannot sample its search space: {err}") from None
    _build_each_model(plan)
    return plan


def _combination(family: str, task: str, profile: dict[str, Any]) -> CombinationPlan:
    metric, mode = (MULTITASK_METRIC, MULTITASK_MODE) if task == MULTITASK else \
        (validation_metric(family, task), TASKS[task].mode)
    base, space = combination_config(family, task, profile)
    try:
        TrainConfig.from_dict(base["train"])  # a bad train value in a search file, preset or profile
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"profile {profile.get('name')}: {family}/{task}: {err}") from None
    max_epochs = int(per_family(profile, "max_epochs", family))
    base.update(max_epochs=max_epochs, torch_threads=int(profile["torch_threads"]))
    return CombinationPlan(family, task, metric, mode, int(per_family(profile, "num_samples", family)), max_epochs,
                           base, space)


def _check_together(plan: SweepPlan, cpus: int | None) -> None:
    """Values that are each in range but cannot work together."""
    profile, source = plan.profile, plan.source
    grace = profile["scheduler"]["grace_period"]
    for family in dict.fromkeys(c.family for c in plan.combinations):
        epochs = int(per_family(profile, "max_epochs", family))
        if grace > epochs:
            raise InvalidInputError(
                f"{source}: scheduler.grace_period {grace} is more than {family}'s max_epochs {epochs}: ASHA "
                f"needs grace_period <= max_epochs (lower the grace period or raise max_epochs.{family})")
    for c in plan.combinations:
        distinct = _distinct_configs(c.space)
        if distinct is not None and c.num_trials > distinct:
            raise InvalidInputError(
                f"{source}: num_samples.{c.family} {c.num_trials} is more than the {distinct} distinct configs of "
                f"{c.name}'s search space: trials would repeat each other")
    wanted = float(profile["trial_resources"]["cpu"])
    if cpus is not None and wanted > cpus:
        raise InvalidInputError(f"{source}: trial_resources.cpu {wanted:g} is more than this machine's {cpus} CPUs: "
                                "no trial could start")
    threads = int(profile["torch_threads"])
    if threads > math.ceil(wanted):
        raise InvalidInputError(f"{source}: torch_threads {threads} is more than trial_resources.cpu {wanted:g}: "
                                "each trial would oversubscribe its CPUs")
    if any(c.family == "pca_dnn" for c in plan.combinations):
        components, rows, pixels = int(profile["pca_components"]), profile["row_limit"], plan.input_spec.pixels
        most = min(pixels, int(rows)) if rows else pixels
        if components > most:
            limit = f"row_limit {rows}" if rows and int(rows) < pixels else \
                f"the {pixels} pixel values of a {plan.input_spec.describe()} face"
            raise InvalidInputError(f"{source}: pca_components {components} is more than {limit} allows "
                                    f"(at most {most})")


def _distinct_configs(space: dict[str, Any]) -> int | None:
    """How many different configs a search space holds: the product of its choices' sizes when
    every tuned key is a choice (1 for no tuned key), None when a key is continuous."""
    count = 1
    for spec in space.values():
        if not (isinstance(spec, dict) and list(spec) == ["choice"]):
            return None
        count *= len({json.dumps(option, sort_keys=True) for option in spec["choice"]})
    return count


def _build_each_model(plan: SweepPlan) -> None:
    """Build every distinct model shape the sweep will train and run it on two dummy faces, so a
    search choice that cannot build (a trunk too deep for the image, an unknown activation) is
    refused now."""
    import torch


    spec = plan.input_spec
    pca = dummy_pca(int(plan.profile["pca_components"]), spec)
    ages = np.arange(0, 100, dtype=float)
    faces = torch.empty(2, *spec.shape, device="meta")
    built: set[str] = set()
    for c in plan.combinations:
        for config in c.configs:
            key = json.dumps([c.family, c.task, _shape_of(config["arch"]), config["train"].get("loss")],
                             sort_keys=True, default=str)
            if key in built:
                continue
            built.add(key)
            try:
                context = make_context(c.task, ages, pca=pca, loss=config["train"].get("loss"), input_spec=spec)
                # On the meta device: shapes are checked, no weights are allocated or computed.
                with torch.device("meta"):
                    model = build_model(c.family, config["arch"], c.task, context)
                with torch.device("meta"), torch.no_grad():
                    model.to("meta").eval()(faces)
            except (ValueError, TypeError, KeyError, RuntimeError) as err:
                arch = json.dumps(config["arch"], sort_keys=True, default=str)
                raise InvalidInputError(f"{plan.source}: {c.name}: a sampled model does not build ({err}); "
                                        f"arch {arch}") from None


def _shape_of(arch: Any) -> Any:
    """An arch with its fractions (dropout rates and the like) blanked: models that differ only
    in those build alike, so one of them is built."""
    if isinstance(arch, dict):
        return {key: _shape_of(value) for key, value in arch.items()}
    if isinstance(arch, list):
        return [_shape_of(value) for value in arch]
    return "<float>" if isinstance(arch, float) else arch


def dummy_pca(components: int, spec: InputSpec = DEFAULT_INPUT_SPEC) -> Any:
    """A PCA of the profile's size, on faces of `spec`, that a pca_dnn model builds and runs with (not fitted)."""

    return PCAParams(mean=np.zeros(spec.pixels, np.float32), components=np.eye(components, spec.pixels, dtype=np.float32),
                     explained_variance=np.ones(components, np.float32),
                     explained_variance_ratio=np.full(components, 1.0 / components, np.float32))
