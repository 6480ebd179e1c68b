"""Running facetune beyond one process.

- `facetune.cluster.local_head`: `LocalHead`, a local `ray start --head` (dashboard on
  127.0.0.1, free ports, token auth on) for job submission; `python -m` it to try one.
- `facetune.cluster.drill`: `run_drill`, the sweep on a head + worker nodes simulated on one
  machine, optionally losing a worker mid-sweep; `python -m` it to rehearse.
- `facetune.cluster.trial_log`: where and how trials ran, read from Tune's experiment storage.

(Submodules are not imported here, so `python -m facetune.cluster.<module>` runs cleanly.)
"""
