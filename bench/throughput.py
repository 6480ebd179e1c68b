"""Shared by the throughput benchmarks: print two sides' medians and their ratio."""
from __future__ import annotations

import statistics


def print_throughput_ratio(baseline: tuple[str, list[float]], candidate: tuple[str, list[float]],
                           target: float | None = None) -> float:
    """Print the median images/s of `baseline` and `candidate` and candidate/baseline; return the ratio."""
    (base_name, base_runs), (cand_name, cand_runs) = baseline, candidate
    base, cand = statistics.median(base_runs), statistics.median(cand_runs)
    width = max(len(base_name), len(cand_name)) + 1
    print(f"{base_name + ':':<{width}} {base:8.0f} images/s (median of {len(base_runs)})")
    print(f"{cand_name + ':':<{width}} {cand:8.0f} images/s (median of {len(cand_runs)})")
    ratio = cand / base
    print(f"ratio {cand_name}/{base_name}: {ratio:.3f}" + (f" (target >= {target})" if target else ""))
    return ratio
