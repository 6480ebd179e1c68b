"""Running facetune beyond one process: a local Ray head for job submission, local multi-node drills."""
from facetune.cluster.local_head import LocalHead, free_ports

__all__ = ["LocalHead", "free_ports"]
