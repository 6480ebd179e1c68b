"""Train the age-conditional GAN on Ray Train.

    python jobs/train_cgan.py --profile smoke --data DIR --results DIR [--resume] [--age-model PATH]
    ray job submit --working-dir . -- python jobs/train_cgan.py --profile local --data DIR --results DIR

Connects to the cluster in RAY_ADDRESS when set (as under `ray job submit`), else starts a local
Ray and shuts it down at the end.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Runs from a plain checkout too (`python jobs/...` puts jobs/, not the repo root, on sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facetune.cgan import job  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    job.add_arguments(parser)
    return job.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
