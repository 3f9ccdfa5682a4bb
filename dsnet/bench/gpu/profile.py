"""What the GPU benchmark runs: the paper profile's model and training settings, and its budget.

The defaults of `BenchProfile` are the paper profile, ``params.yaml`` overlaid with
``params/paper.yaml`` (a test keeps them equal), so that ``python -m dsnet.bench.gpu`` needs
no YAML library; ``dsnet bench gpu`` reads the same values from the files through
`profile_from_params`, which also turns any other profile (the CPU one) into a benchmark.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dsnet.core.errors import InputError
from dsnet.models.attention import AttentionOptions

PAPER_TRAIN_SLICES = 3844
"""Training slices of the paper's data set (4:1 split of 4,805 slices, docs/training.md)."""

PAPER_DETECTOR = {
    "rpn_pre_nms_top_n_train": 2000,
    "rpn_post_nms_top_n_train": 2000,
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_test": 1000,
    "rpn_batch_size_per_image": 256,
    "box_batch_size_per_image": 512,
    "box_positive_fraction": 0.25,
    "box_detections_per_img": 100,
}
"""``model.detector`` of the paper profile (torchvision's Faster R-CNN defaults)."""


@dataclass(frozen=True)
class BenchProfile:
    """The model and training settings measured (defaults: the paper profile).

    Attributes:
        size: Square input side in pixels (``preprocess.canvas_px``: the canvas the detector
            never rescales; images are made this size).
        batch_size: Training images per step (``train.batch_size``).
        epochs: Epochs of the projected run (``train.epochs``).
        train_slices: Training slices of the projected run (the paper's 3,844).
        detector: Extra Faster R-CNN arguments (``model.detector``).
        anchor_sizes: ``model.anchor_sizes`` (empty: torchvision's anchors).
        attention_residual: ``model.attention_residual``.
        attention_groups: ``model.attention_groups``.
        attention_reduction: ``model.attention_reduction``.
        pretrained: The profile starts from local weights (``model.weights`` set): frozen
            BatchNorm and `trainable_layers` trainable stages, as in training.
        trainable_layers: ``model.trainable_layers`` (None: the builder's default).
        lr: SGD learning rate (``train.lr``).
        momentum: ``train.momentum``.
        weight_decay: ``train.weight_decay``.
        clip_grad_norm: ``train.clip_grad_norm`` (None or 0: off).
        amp: ``train.amp`` (float16 mixed precision on CUDA).
        cpu_bf16: ``train.cpu_bf16`` (bfloat16 autocast on the CPU: true, false, auto).
        channels_last: ``train.channels_last``.
        cudnn_benchmark: ``train.cudnn_benchmark``.

    """

    size: int = 544
    batch_size: int = 9
    epochs: int = 100
    train_slices: int = PAPER_TRAIN_SLICES
    detector: dict[str, Any] = field(default_factory=lambda: dict(PAPER_DETECTOR))
    anchor_sizes: list[int] = field(default_factory=list)
    attention_residual: bool = True
    attention_groups: int = AttentionOptions.groups
    attention_reduction: int = AttentionOptions.reduction
    pretrained: bool = True
    trainable_layers: int | None = 3
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0001
    clip_grad_norm: float | None = 10.0
    amp: bool = True
    cpu_bf16: bool | str = "auto"
    channels_last: bool = True
    cudnn_benchmark: bool = True

    def model_params(self, attention: str) -> dict[str, Any]:
        """The ``model`` params section of R50 with `attention` (``none`` or ``ds``)."""
        return {
            "backbone": "resnet50",
            "attention": attention,
            "attention_residual": self.attention_residual,
            "attention_groups": self.attention_groups,
            "attention_reduction": self.attention_reduction,
            "anchor_sizes": list(self.anchor_sizes),
            "detector": dict(self.detector),
        }


@dataclass(frozen=True)
class BenchBudget:
    """How long each measurement runs; every stage is bounded.

    Attributes:
        warmup: Untimed iterations first (cuDNN autotuning, allocator, compilation).
        iterations: Timed iterations at most.
        stage_seconds: A stage stops timing after this many seconds (at least one timed
            iteration is always taken).
        total_seconds: Stages that would start after this many seconds are skipped.
        inference_batches: Batch sizes of the inference measurements.
        compile_backend: ``torch.compile`` backend of the ``compile`` setting.

    """

    warmup: int = 3
    iterations: int = 20
    stage_seconds: float = 12.0
    total_seconds: float = 240.0
    inference_batches: tuple[int, ...] = (1, 16)
    compile_backend: str = "inductor"


TINY_DETECTOR = {
    "rpn_pre_nms_top_n_train": 100,
    "rpn_post_nms_top_n_train": 50,
    "rpn_pre_nms_top_n_test": 50,
    "rpn_post_nms_top_n_test": 20,
    "rpn_batch_size_per_image": 32,
    "box_batch_size_per_image": 16,
    "box_positive_fraction": 0.25,
    "box_detections_per_img": 10,
}
TINY_PROFILE = replace(
    BenchProfile(), size=64, batch_size=2, detector=dict(TINY_DETECTOR)
)
"""CPU test size: the paper profile's model on 64 px images, batch 2, few proposals and RoIs."""
TINY_BUDGET = BenchBudget(
    warmup=0,
    iterations=1,
    stage_seconds=2.0,
    total_seconds=600.0,
    inference_batches=(1, 2),
    compile_backend="eager",
)
"""CPU test budget: one timed iteration per configuration, no warm-up; ``torch.compile`` with the
``eager`` backend (graph capture without code generation, which takes minutes on a CPU)."""


def with_bounds(budget: BenchBudget, **bounds: float | None) -> BenchBudget:
    """`budget` with the given bounds (``iterations=5``, ...); None leaves a bound as it is.

    Raises:
        InputError: A bound that is not positive (``warmup`` may be 0).

    """
    given = {name: value for name, value in bounds.items() if value is not None}
    for name, value in given.items():
        if value < 0 or (value == 0 and name != "warmup"):
            raise InputError(name.replace("_", "-"), f"must be positive, got {value}")
    return replace(budget, **given)


def profile_from_params(params: Mapping[str, Any]) -> BenchProfile:
    """Turn resolved parameters (``preprocess``, ``model``, ``train``) into a `BenchProfile`.

    Args:
        params: Merged parameters, e.g. ``params.yaml`` + ``params/paper.yaml``.

    Returns:
        The profile; keys a section lacks keep the paper profile's value.

    Raises:
        InputError: A size or batch size that is not a positive integer.

    """
    model, train = params.get("model") or {}, params.get("train") or {}
    canvas = (params.get("preprocess") or {}).get("canvas_px")
    paper = BenchProfile()
    for name, value in (
        ("preprocess.canvas_px", paper.size if canvas is None else canvas),
        ("train.batch_size", train.get("batch_size", paper.batch_size)),
        ("train.epochs", train.get("epochs", paper.epochs)),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(name, f"must be a positive integer, got {value!r}")
    return BenchProfile(
        size=paper.size if canvas is None else canvas,
        batch_size=train.get("batch_size", paper.batch_size),
        epochs=train.get("epochs", paper.epochs),
        detector=dict(model.get("detector") or {}),
        anchor_sizes=list(model.get("anchor_sizes") or []),
        attention_residual=bool(model.get("attention_residual", paper.attention_residual)),
        attention_groups=int(model.get("attention_groups", paper.attention_groups)),
        attention_reduction=int(model.get("attention_reduction", paper.attention_reduction)),
        pretrained=model.get("weights") is not None,
        trainable_layers=model.get("trainable_layers"),
        lr=float(train.get("lr", paper.lr)),
        momentum=float(train.get("momentum", paper.momentum)),
        weight_decay=float(train.get("weight_decay", paper.weight_decay)),
        clip_grad_norm=train.get("clip_grad_norm"),
        amp=bool(train.get("amp", paper.amp)),
        cpu_bf16=train.get("cpu_bf16", paper.cpu_bf16),
        channels_last=bool(train.get("channels_last", False)),
        cudnn_benchmark=bool(train.get("cudnn_benchmark", True)),
    )
