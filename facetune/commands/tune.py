"""`facetune tune` (and jobs/tune_all.py): the nine-combination Ray Tune sweep."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from facetune.commands.checks import read_sweep_summary
from facetune.config_files import raycfg_dir
from facetune.errors import FacetuneError, NoDataError, OutputError, UsageError
from facetune.ray_session import add_address_argument
from facetune.settings import DEFAULT_REHEARSAL_RESULTS, DEFAULT_RESULTS, default_data_source, require_data_path

if TYPE_CHECKING:
    from facetune.tuning.plan import SweepPlan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="local",
                        help="sweep profile: a name in raycfg/profiles (smoke, local, gpu) or a YAML path "
                             "(default: local)")
    parser.add_argument("--data", default=None,
                        help="prepared Parquet folder, or a raw source (Kaggle CSV / UTKFace folder) prepared "
                             f"into RESULTS/data first (default: $FACETUNE_DATA or {default_data_source()})")
    parser.add_argument("--results", default=None,
                        help=f"results folder or URI such as s3://bucket/run (default: {DEFAULT_RESULTS})")
    parser.add_argument("--storage", default=None,
                        help="where Ray Tune keeps trial state and checkpoints (default: RESULTS/tune)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted sweep; finished combinations and trials are not redone")
    parser.add_argument("--only", nargs="+", metavar="FAMILY/TASK",
                        help="run only these combinations, e.g. cnn/gender dnn/age")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change a profile key, e.g. max_epochs=6, train.lr=0.001 (every family) or "
                             "overrides.cnn.arch.dense=[64] (repeatable; checked like the profile file)")
    add_address_argument(parser)
    parser.add_argument("--gpu", choices=("auto", "yes", "no"), default="auto",
                        help="GPU trials: auto = when the cluster has GPUs now; yes = ask for them (autoscaling "
                             "clusters whose GPU nodes start at zero); no = CPU only")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the profile whole, print the plan (combinations, trials, epochs, slots, ASHA "
                             "rungs, each epoch timed here, the wall-time bounds) and exit without starting Ray")
    parser.add_argument("--rehearse", action="store_true",
                        help="the same job cut down to a few minutes (raycfg/rehearsal.yaml: every combination, "
                             f"few faces, one short trial each); results default to {DEFAULT_REHEARSAL_RESULTS}")
    parser.add_argument("--verbose", action="store_true",
                        help="also print Ray Tune's trial tables (default: one line per finished trial and a "
                             "progress line per combination)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tune", help="search all nine model/task combinations with Ray Tune",
                                   description=__doc__)
    add_arguments(parser)
    parser.set_defaults(func=run)


def available_profiles() -> list[str]:
    return sorted(path.stem for path in (raycfg_dir() / "profiles").glob("*.yaml"))


def check_sweep_arguments(args: argparse.Namespace) -> tuple[SweepPlan, list[dict]]:
    """The sweep's plan (the profile checked whole, facetune.tuning.plan) and the existing
    summary, checked before Ray starts.

    Raises UsageError for an unknown profile or --only (listing what exists) or an existing sweep
    without --resume, and NoDataError for a summary.json that cannot be read.
    """
    import yaml

    from facetune.data.prepare import planned_spec
    from facetune.tuning.plan import local_cpus, plan_sweep
    from facetune.tuning.profiles import combinations, load_profile, profile_source, rehearsal

    if args.results is None:
        args.results = str(DEFAULT_REHEARSAL_RESULTS if args.rehearse else DEFAULT_RESULTS)
    try:
        source = profile_source(args.profile, args.set)
        profile = load_profile(args.profile, args.set)
        if args.rehearse:
            profile, source = rehearsal(profile, source)
    except FacetuneError:
        raise
    except FileNotFoundError:
        raise UsageError(f"--profile {args.profile}: no such profile; available: {', '.join(available_profiles())} "
                         "(or a path to a .yaml file)") from None
    except (ValueError, yaml.YAMLError) as err:
        raise UsageError(f"--profile {args.profile}: unusable profile ({err})") from None
    try:
        offered = combinations(profile)
    except ValueError as err:
        raise UsageError(f"--profile {args.profile}: unusable profile ({err})") from None
    try:
        pairs = combinations(profile, args.only)
    except ValueError as err:
        raise UsageError(f"--only {' '.join(args.only or [])}: {err}") from None
    if not pairs:
        raise UsageError(f"--only {' '.join(args.only or [])}: selects none of profile {args.profile}'s "
                         f"combinations ({' '.join(f'{f}/{t}' for f, t in offered)})")
    plan = plan_sweep(profile, source, args.only, cpus=local_cpus(args.address), input_spec=planned_spec(args.data))
    local = Path(args.results) if "://" not in str(args.results) else None
    if local is not None and local.exists() and not local.is_dir():
        raise OutputError(f"--results {args.results}: is a file, not a results folder")
    summary = read_sweep_summary(args.results)
    if summary and not args.resume:
        raise UsageError(f"--results {args.results}: already holds a sweep ({len(summary)} combinations done); "
                         "pass --resume to continue it or choose another --results")
    return plan, summary


def run(args: argparse.Namespace) -> int:
    from facetune.tuning.sweep import SweepExistsError, result_tasks, run_sweep

    plan, _ = check_sweep_arguments(args)
    pairs = plan.pairs
    data = require_data_path(args.data)
    if args.dry_run:
        from facetune.tuning.dry_run import print_dry_run
        from facetune.tuning.plan import local_cpus

        print_dry_run(plan, data, args.results, local_cpus(args.address))
        return 0
    try:
        summary = run_sweep(plan, args.data, args.results, resume=args.resume, storage=args.storage,
                            only=args.only, use_gpu=args.gpu, address=args.address, verbose=args.verbose)
    except SweepExistsError as err:
        raise UsageError(str(err)) from None
    finished = {(entry.family, entry.task) for entry in summary}
    missing = [f"{f}/{t}" for f, t in pairs if not all((f, task) in finished for task in result_tasks(t))]
    if len(missing) == len(pairs):
        raise NoDataError(f"no combination finished (every trial failed?): {' '.join(missing)}; "
                          f"nothing added to {args.results}/summary.json")
    if missing:
        print(f"[facetune] not finished (left out of the summary): {' '.join(missing)}", file=sys.stderr)
    print(f"[facetune] sweep finished: {len(pairs) - len(missing)} of {len(pairs)} combinations in "
          f"{args.results}/summary.json")
    return 0
