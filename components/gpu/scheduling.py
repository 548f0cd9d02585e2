"""The GPU scheduling contract: node labels, taints and how serving pods use them.

The deployment component (a later issue) builds pod specs from these functions, so the
labels the node groups set and the labels the pods select cannot drift apart.

The rule: a model's serving replicas up to the reserved node count prefer reserved
nodes; the rest prefer spot; every GPU pod tolerates the GPU taint. Preferences, not
requirements: if all spot capacity is taken away, burst replicas may still land on
free reserved capacity, and serving continues at the reserved floor.
"""

from __future__ import annotations

from typing import Any, Literal

CAPACITY_TYPE_LABEL = "capacity-type"
GPU_NODE_LABEL = "platform/gpu"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
GPU_RESOURCE = "nvidia.com/gpu"

Market = Literal["reserved", "spot"]


def node_labels(market: Market) -> dict[str, str]:
    return {CAPACITY_TYPE_LABEL: market, GPU_NODE_LABEL: "true"}


def gpu_toleration() -> dict[str, str]:
    return {"key": GPU_TAINT["key"], "operator": "Exists", "effect": GPU_TAINT["effect"]}


def _gpu_pod(preferences: list[tuple[Market, int]]) -> dict[str, Any]:
    """Require a GPU node, prefer capacity types by weight, tolerate the GPU taint."""
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": GPU_NODE_LABEL, "operator": "In", "values": ["true"]}]}
                    ]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": weight,
                     "preference": {"matchExpressions": [{"key": CAPACITY_TYPE_LABEL, "operator": "In", "values": [tier]}]}}
                    for tier, weight in preferences
                ],  # fmt: skip
            }
        },
        "tolerations": [gpu_toleration()],
    }


def pod_scheduling(tier: Market) -> dict[str, Any]:
    """Pod-spec fragment (affinity + tolerations) for the replicas of one tier.

    ``reserved`` tier: the first N replicas (N = reserved nodes), preferring reserved
    nodes. ``spot`` tier: the burst replicas, preferring spot nodes. Both require a GPU
    node and tolerate the GPU taint.
    """
    return _gpu_pod([(tier, 100)])


def serving_pod_scheduling() -> dict[str, Any]:
    """Pod-spec fragment for one Deployment that fills the reserved floor first, then bursts to spot.

    Both tiers in one Deployment (one HPA, one PDB): the scheduler scores reserved nodes far
    above spot ones, so replicas land on reserved capacity while it has free GPUs and on spot
    after; on scale-down the ReplicaSet removes the newest pods first, which are the burst ones.
    Preferences, not requirements, as in :func:`pod_scheduling`.
    """
    return _gpu_pod([("reserved", 100), ("spot", 10)])


def split_replicas(total: int, reserved_nodes: int, gpus_per_replica: int = 1, gpus_per_node: int = 1) -> dict[str, int]:
    """How many of ``total`` replicas go to each tier: the reserved tier is capped by what
    the reserved nodes can hold."""
    if total < 0 or reserved_nodes < 0 or gpus_per_replica < 1 or gpus_per_node < 1:
        raise ValueError("replica and node counts must be non-negative, GPU counts positive")
    reserved_slots = reserved_nodes * (gpus_per_node // gpus_per_replica)
    reserved = min(total, reserved_slots)
    return {"reserved": reserved, "spot": total - reserved}


def contract(reserved_nodes: int) -> dict[str, Any]:
    """What the stack exports as ``gpuScheduling`` for the deployment work."""
    return {
        "labels": {"reserved": node_labels("reserved"), "spot": node_labels("spot")},
        "taints": [GPU_TAINT],
        "resource": GPU_RESOURCE,
        "reservedNodes": reserved_nodes,
        "rule": (
            "serving pods prefer capacity-type=reserved (weight 100) over capacity-type=spot (weight 10): "
            "the reserved floor fills first, bursts land on spot; every GPU pod tolerates "
            "nvidia.com/gpu=true:NoSchedule"
        ),
        "podScheduling": {"reserved": pod_scheduling("reserved"), "spot": pod_scheduling("spot")},
        "servingPodScheduling": serving_pod_scheduling(),
    }
