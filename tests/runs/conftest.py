"""One Ray cluster for every Ray test of ``tests/runs``: three nodes of one CPU each (a head and
two workers, ``ray.cluster_utils.Cluster``) on this machine, started once (Ray's start-up is most
of a Ray test's time)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from needs import need

import camlens


@pytest.fixture(scope="package")
def cluster(tmp_path_factory):
    """The three-node cluster, its workers importing this camlens and these tests' models;
    ``marker`` is the file ``ray_models:killer`` writes when it kills its actor."""
    import ray_models

    ray = need("ray")
    from ray.cluster_utils import Cluster

    marker = tmp_path_factory.mktemp("kill") / "killed"
    here = str(Path(__file__).parents[1])  # tests/, where ray_models.py is
    src = str(Path(camlens.__file__).parents[1])
    with pytest.MonkeyPatch.context() as patch:  # the nodes' processes inherit these
        patch.setenv("PYTHONPATH", os.pathsep.join([src, here, os.environ.get("PYTHONPATH", "")]))
        patch.setenv(ray_models.MARKER, str(marker))
        patch.setenv(ray_models.SPARE, str(os.getpid()))
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        workers = [nodes.add_node(num_cpus=1) for _ in range(2)]
        ray.init(address=nodes.address, log_to_driver=False, logging_level="WARNING")
    yield SimpleNamespace(marker=marker, nodes=nodes, workers=workers)
    ray.shutdown()
    nodes.shutdown()
