"""Failure drill: the sweep on a multi-node Ray cluster simulated on one machine.

A head node (no CPUs, so every trial runs on a worker) and N worker nodes, all local processes
(`ray.cluster_utils.Cluster`). Optionally one worker node is removed while a trial on it is
mid-training; the sweep must still finish, Tune restarting the lost trial from its last
checkpoint on a surviving node. tests/test_multinode.py runs it; to rehearse fault tolerance by
hand before paying for a cluster:

    python tests/drill.py --profile smoke --data PREPARED --results OUT --remove-worker

Run it in its own process (it starts and owns a Ray cluster); it writes OUT/drill.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from trial_log import read_trial_reports

from facetune.cluster.local_head import free_ports
from facetune.json_files import write_json

DRILL_REPORT = "drill.json"
# Notice a dead node within ~2 s instead of Ray's default ~30 s, so its trials are rescheduled
# promptly (the node's raylet is gone, so a health check fails at once).
FAST_FAILURE_DETECTION = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}


class NodeRemover(threading.Thread):
    """Watches the trials' reports and removes the first worker node caught mid-trial.

    "Mid-trial": a trial on that node has reported (each report carries a checkpoint) but not
    its last epoch, so removing the node forces a restore elsewhere: from that report's
    checkpoint, or from the one before when the driver had not registered it yet.
    """

    def __init__(self, cluster: Any, worker_nodes: dict[str, Any], storage: Path,
                 max_epochs_for: Callable[[str], int], poll_s: float = 0.2) -> None:
        super().__init__(name="facetune-node-remover", daemon=True)
        self.cluster, self.worker_nodes, self.storage = cluster, worker_nodes, storage
        self.max_epochs_for, self.poll_s = max_epochs_for, poll_s
        self.removed: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self._stop_event = threading.Event()
        self._started_at = time.monotonic()

    def run(self) -> None:
        try:
            while not self._stop_event.wait(self.poll_s):
                victim = self._trial_in_progress_on_a_worker()
                if victim is not None:
                    node_id, report = victim
                    self.cluster.remove_node(self.worker_nodes[node_id], allow_graceful=False)
                    self.removed = {"node_id": node_id, "experiment": report.experiment,
                                    "trial_id": report.trial_id, "epoch_reported": report.epoch,
                                    "seconds_into_sweep": round(time.monotonic() - self._started_at, 1)}
                    print(f"[facetune drill] removed worker node {node_id[:12]} while trial "
                          f"{report.trial_id} ({report.experiment}) was past epoch {report.epoch}", flush=True)
                    return
        except BaseException as error:  # reported by run_drill; a thread cannot raise to its caller
            self.error = error

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)

    def _trial_in_progress_on_a_worker(self) -> tuple[str, Any] | None:
        latest: dict[tuple[str, str], Any] = {}
        for report in read_trial_reports(self.storage, live=True) if self.storage.is_dir() else []:
            latest[(report.experiment, report.trial_id)] = report
        in_progress = [report for report in latest.values()
                       if report.node_id in self.worker_nodes and report.epoch < self.max_epochs_for(report.experiment)]
        if not in_progress:
            return None
        # The trial with the most epochs still to go: it cannot finish before the node is gone.
        victim = min(in_progress, key=lambda report: report.epoch - self.max_epochs_for(report.experiment))
        return victim.node_id, victim


def run_drill(profile: str | dict[str, Any], data: str | os.PathLike[str], results: str | os.PathLike[str], *,
              workers: int = 2, cpus_per_worker: int = 1, remove_worker: bool = False) -> dict[str, Any]:
    """Run the sweep on a local head + `workers` worker nodes; returns (and writes) the drill report."""
    import ray
    from ray.cluster_utils import Cluster

    from facetune.tuning.profiles import load_profile, per_family
    from facetune.tuning.sweep import run_sweep

    if ray.is_initialized():
        raise RuntimeError("the drill starts its own Ray cluster; run it in a process without Ray initialised")
    if remove_worker and workers < 2:
        raise ValueError("removing a worker needs at least two, so that one survives")
    profile = load_profile(profile) if isinstance(profile, str) else profile
    results = Path(results)
    storage = results / "tune"

    def max_epochs_for(experiment: str) -> int:
        family = next(f for f in ("pca_dnn", "cnn", "dnn") if experiment.startswith(f + "_"))
        return int(per_family(profile, "max_epochs", family))

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "_system_config": FAST_FAILURE_DETECTION,
        # The head's agent would otherwise take Ray's fixed default port (52365).
        "dashboard_agent_listen_port": free_ports(1)[0]})
    remover = None
    try:
        worker_nodes = {node.node_id: node for node in
                        (cluster.add_node(num_cpus=cpus_per_worker) for _ in range(workers))}
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        if remove_worker:
            remover = NodeRemover(cluster, worker_nodes, storage, max_epochs_for)
            remover.start()
        started = time.monotonic()
        summary = run_sweep(profile, data, results, storage=str(storage))
        report = {
            "head_node_id": cluster.head_node.node_id,
            "worker_node_ids": sorted(worker_nodes),
            "removed": remover.removed if remover else None,
            "combinations_finished": len(summary),
            "sweep_seconds": round(time.monotonic() - started, 1),
        }
        if remover is not None and remover.error is not None:
            raise RuntimeError(f"the node remover failed: {remover.error!r}") from remover.error
        write_json(results / DRILL_REPORT, report)
        return report
    finally:
        if remover is not None:
            remover.stop()
        ray.shutdown()
        cluster.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="smoke", help="sweep profile name or YAML path (default: smoke)")
    parser.add_argument("--data", required=True, help="prepared Parquet folder or raw source")
    parser.add_argument("--results", required=True, help="results folder (local; the nodes share this machine)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=int, default=1)
    parser.add_argument("--remove-worker", action="store_true",
                        help="remove a worker node while one of its trials is mid-training")
    args = parser.parse_args(argv)
    report = run_drill(args.profile, args.data, args.results, workers=args.workers,
                       cpus_per_worker=args.cpus_per_worker, remove_worker=args.remove_worker)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
