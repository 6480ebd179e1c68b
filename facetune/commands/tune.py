"""`facetune tune` (and jobs/tune_all.py): the nine-combination Ray Tune sweep."""
from __future__ import annotations

import argparse
import sys

from facetune.settings import DEFAULT_RESULTS, default_data_source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="local",
                        help="sweep profile: a name in raycfg/profiles (smoke, local, gpu) or a YAML path "
                             "(default: local)")
    parser.add_argument("--data", default=None,
                        help="prepared Parquet folder, or a raw source (Kaggle CSV / UTKFace folder) prepared "
                             f"into RESULTS/data first (default: $FACETUNE_DATA or {default_data_source()})")
    parser.add_argument("--results", default=str(DEFAULT_RESULTS),
                        help=f"results folder or URI such as s3://bucket/run (default: {DEFAULT_RESULTS})")
    parser.add_argument("--storage", default=None,
                        help="where Ray Tune keeps trial state and checkpoints (default: RESULTS/tune)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted sweep; finished combinations and trials are not redone")
    parser.add_argument("--only", nargs="+", metavar="FAMILY/TASK",
                        help="run only these combinations, e.g. cnn/gender dnn/age")
    parser.add_argument("--gpu", choices=("auto", "yes", "no"), default="auto",
                        help="GPU trials: auto = when the cluster has GPUs now; yes = ask for them (autoscaling "
                             "clusters whose GPU nodes start at zero); no = CPU only")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tune", help="search all nine model/task combinations with Ray Tune",
                                   description=__doc__)
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facetune.tuning.sweep import SweepExistsError, run_sweep

    try:
        summary = run_sweep(args.profile, args.data, args.results, resume=args.resume, storage=args.storage,
                            only=args.only, use_gpu=args.gpu)
    except SweepExistsError as err:
        print(f"facetune: {err}", file=sys.stderr)
        return 2
    print(f"[facetune] sweep finished: {len(summary)} combinations in {args.results}/summary.json")
    return 0
