"""Where an RLlib run's pieces landed: the Ray cluster it got (nodes, CPUs, GPUs) and the node of each env runner
and learner. ``lm-gym train --backend rllib`` prints it at the start and records it in ``summary.json``
(``"cluster"``), so a run on a cluster says whether its env runners really went to the other machines."""

from __future__ import annotations

from typing import Any

import ray
from ray.rllib.algorithms import Algorithm

PLACEMENT_TIMEOUT_S = 30.0  # each actor answers in milliseconds; one that does not is reported, never waited for


def _where() -> dict[str, Any]:
    """The node this runs on (called inside each env runner and learner)."""
    import socket

    import torch

    context = ray.get_runtime_context()
    return {"node_id": context.get_node_id(), "host": socket.gethostname(),
            "gpus": [str(gpu) for gpu in ray.get_gpu_ids()], "cuda": torch.cuda.is_available()}


def cluster_placement(algorithm: Algorithm) -> dict[str, Any]:
    """``{"nodes": [...], "cpus", "gpus", "env_runners": [...], "learners": [...]}``: the cluster's alive nodes
    (id, address, CPUs, GPUs) and, for each remote env runner and each learner, its node. A local learner or
    env runner (``num_learners=0``, ``num_env_runners=0``) is the driver's process."""
    nodes = [{"node_id": node["NodeID"], "address": node["NodeManagerAddress"],
              "cpus": node["Resources"].get("CPU", 0.0), "gpus": node["Resources"].get("GPU", 0.0)}
             for node in ray.nodes() if node["Alive"]]
    if algorithm.env_runner_group.num_remote_env_runners():
        runners = algorithm.env_runner_group.foreach_env_runner(
            lambda runner: {"worker_index": runner.worker_index, **_where()}, local_env_runner=False,
            timeout_seconds=PLACEMENT_TIMEOUT_S)
    else:
        runners = [{"worker_index": 0, **_where(), "in_driver": True}]
    learners = algorithm.learner_group
    results = learners.foreach_learner(lambda learner: {**_where(), "device": str(learner._device)},
                                       timeout_seconds=PLACEMENT_TIMEOUT_S)
    placed = [{**result.get(), "in_driver": learners.is_local} for result in results if result.ok]
    return {"nodes": nodes, "cpus": sum(n["cpus"] for n in nodes), "gpus": sum(n["gpus"] for n in nodes),
            "env_runners": runners, "learners": placed}


def describe_placement(placement: dict[str, Any]) -> str:
    """Two lines for the console: the cluster, then where the env runners and learners run."""
    address = {node["node_id"]: node["address"] for node in placement["nodes"]}
    if len(set(address.values())) < len(address):  # nodes sharing an address (one machine): tell them apart
        address = {node_id: f"{host} (node {node_id[:8]})" for node_id, host in address.items()}

    def on(pieces: list[dict[str, Any]]) -> str:
        by_node: dict[str, int] = {}
        for piece in pieces:
            name = address.get(piece["node_id"], piece["node_id"][:8])
            if piece.get("in_driver"):
                name += " (in the driver)"
            by_node[name] = by_node.get(name, 0) + 1
        return ", ".join(f"{count} on {name}" for name, count in by_node.items()) or "none answered"

    nodes = len(placement["nodes"])
    devices = sorted({learner["device"] for learner in placement["learners"]})
    cpus, gpus = placement["cpus"], placement["gpus"]
    return (f"Ray cluster: {nodes} node{'s' * (nodes != 1)}, {cpus:g} CPU{'s' * (cpus != 1)}, "
            f"{gpus:g} GPU{'s' * (gpus != 1)}\n"
            f"env runners: {on(placement['env_runners'])}; learners: {on(placement['learners'])}"
            f" ({', '.join(devices)})")
