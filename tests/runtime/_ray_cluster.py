"""Local Ray clusters for the Ray test modules (one xdist worker runs them one at a time).

Ray gives a starting node 30 s to register with its GCS; on a loaded 2-core CI machine the
head once missed that ("The current node timed out during startup"). A failed start is
cleaned up (``ray stop --force``: only these modules run Ray, never two at once) and tried
again."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from ray.cluster_utils import Cluster

ATTEMPTS = 3


def start_cluster(head: dict[str, Any], workers: list[dict[str, Any]]) -> Cluster:
    """A head started with ``head`` plus one node per entry of ``workers``, all registered."""
    for attempt in range(1, ATTEMPTS + 1):
        cluster: Cluster | None = None
        try:
            cluster = Cluster(initialize_head=True, head_node_args=head)
            for args in workers:
                cluster.add_node(**args)
            cluster.wait_for_nodes()
            return cluster
        except Exception:
            if cluster is not None:
                cluster.shutdown()
            subprocess.run(
                [sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"],
                capture_output=True,
                check=False,
                timeout=60,
            )
            if attempt == ATTEMPTS:
                raise
    raise AssertionError("unreachable")
