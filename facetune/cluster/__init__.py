"""Running facetune beyond one process.

- `facetune.cluster.local_head`: `LocalHead`, a local `ray start --head` (dashboard on
  127.0.0.1, free ports, token auth on) for job submission; `python -m` it to try one.

The failure drill (a head + worker nodes simulated on one machine, one lost mid-sweep) is a
test fixture: tests/drill.py, with tests/trial_log.py reading where trials ran.
(Submodules are not imported here, so `python -m facetune.cluster.local_head` runs cleanly.)
"""
