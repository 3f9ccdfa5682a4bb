"""Component ``placement``: the run's GPU count as pod resources, tolerations and selector."""

from typing import NamedTuple

from components import dsnet_component


@dsnet_component
def placement(gpu_count: int, gpu_type: str, gpu_node_selector: dict) -> NamedTuple(
    "Outputs",
    [
        ("accelerator", str),
        ("gpus", str),
        ("eval_gpus", str),
        ("cpu_request", str),
        ("cpu_limit", str),
        ("memory_request", str),
        ("memory_limit", str),
        ("tolerations", list),
        ("node_selector", dict),
    ],
):
    """Resources and scheduling of the train and evaluate pods (dsnet.platform.placement).

    Args:
        gpu_count: GPUs of the training pod; 0: CPU pods without GPU resource, toleration
            or node selector.
        gpu_type: Extended resource of the GPUs (also the tolerated taint key).
        gpu_node_selector: Node labels of the GPU pool; empty: none (GPU pods rely on the
            resource and the toleration).

    Returns:
        accelerator: GPU resource name, "" for CPU pods (KFP then sets no accelerator).
        gpus: GPUs of the training pod.
        eval_gpus: GPUs of the evaluation pod (1 when training has GPUs: FPS on a GPU).
        cpu_request: CPU request of both pods.
        cpu_limit: CPU limit of both pods.
        memory_request: Memory request of both pods.
        memory_limit: Memory limit of both pods.
        tolerations: Tolerations of both pods (a list of Toleration objects).
        node_selector: Node selector of both pods.
    """
    from collections import namedtuple

    from dsnet.platform.placement import pod_placement

    placed = pod_placement(gpu_count, gpu_type, gpu_node_selector)
    print(f"placement: {placed}")
    fields = [
        "accelerator", "gpus", "eval_gpus", "cpu_request", "cpu_limit",
        "memory_request", "memory_limit", "tolerations", "node_selector",
    ]  # fmt: skip
    placed["eval_gpus"] = str(min(gpu_count, 1))
    return namedtuple("Outputs", fields)(*(placed[field] for field in fields))
