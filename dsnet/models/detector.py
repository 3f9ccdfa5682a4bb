"""The detector builder: backbone + attention → torchvision `FasterRCNN`, optional weights.

Weights come from a local file only; nothing is ever downloaded (every torchvision builder
is called with ``weights=None``). Three kinds of file are accepted:

* a torchvision detection checkpoint (a state dict with ``backbone.*``, ``rpn.*``,
  ``roi_heads.*`` keys, e.g. ``fasterrcnn_resnet50_fpn_coco-258fb6c6.pth``);
* our own checkpoint, a dict with a ``"state_dict"`` entry of that form;
* a torchvision ImageNet classification checkpoint of the backbone (e.g.
  ``resnet50-0676ba61.pth``), whose feature-extractor tensors go to ``backbone.body``.

Tensors whose shape differs from the model's (the box predictor when ``num_classes``
differs) are skipped and reported, as are model tensors the file does not provide (the
attention modules) and file tensors the model has no place for.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN

from dsnet.core.errors import InputError
from dsnet.core.torchfile import load_torch_file
from dsnet.models.attention import ATTENTIONS, DEFAULT_ATTENTION, AttentionOptions
from dsnet.models.backbones import BACKBONES, build_backbone, imagenet_key_to_detector

logger = logging.getLogger(__name__)

DETECTOR_PREFIXES = ("backbone.", "rpn.", "roi_heads.")


@dataclass(frozen=True)
class WeightsReport:
    """What `load_weights` did with each tensor.

    Attributes:
        path: The checkpoint file.
        source: ``"detector"`` or ``"ImageNet backbone"`` (how its keys were read).
        loaded: Model tensors set from the file.
        skipped: Tensors in both whose shapes differ (left at initialisation).
        missing: Model tensors the file does not provide (left at initialisation).
        unused: File tensors the model has no place for.

    """

    path: Path
    source: str
    loaded: list[str]
    skipped: list[str]
    missing: list[str]
    unused: list[str]

    def summary(self) -> str:
        """One line: how many tensors were loaded, and which were skipped, missing, unused."""
        parts = [f"loaded {len(self.loaded)} tensors from {self.path} ({self.source})"]
        for label, keys in (
            ("skipped, other shape", self.skipped),
            ("missing, left at initialisation", self.missing),
            ("unused", self.unused),
        ):
            if keys:
                parts.append(f"{len(keys)} {label}: {_abbreviate(keys)}")
        return "; ".join(parts)


def build_detector(
    backbone: str,
    attention: str,
    num_classes: int = 4,
    weights: str | PathLike[str] | None = None,
    attention_options: AttentionOptions = DEFAULT_ATTENTION,
    trainable_layers: int | None = None,
    **faster_rcnn_kwargs: Any,
) -> FasterRCNN:
    """Build a Faster R-CNN with `backbone` and `attention` (DSNet: ``resnet50``, ``ds``).

    Args:
        backbone: ``resnet50`` (FPN) | ``vgg16`` (single map) | ``mobilenet_v3`` (FPN).
        attention: ``none | se | sk | ds``, inserted after the first and the last backbone
            stage (see `dsnet.models.backbones`).
        num_classes: Classes including background (4: background + the 3 WHO classes).
        weights: Local checkpoint to initialise from (see the module docstring), or ``None``
            for random initialisation. With weights the backbone uses `FrozenBatchNorm2d`
            and freezes its early stages, as torchvision's pretrained detectors do.
        attention_options: How the attention modules are built: residual connection
            (``output = x + f(x)``, identity at initialisation), groups of the DS/SK
            convolutions (1: dense) and the gates' reduction; see `AttentionOptions`.
        trainable_layers: Backbone stages left trainable, counted from the last; ``None``
            means 3 with `weights`, all without.
        **faster_rcnn_kwargs: Passed to `FasterRCNN` (``min_size``, ``max_size``,
            ``box_score_thresh``, ``rpn_anchor_generator``, ...); they override the
            backbone's defaults.

    Returns:
        The model, in training mode. Called on ``list[FloatTensor[3, H, W]]`` in ``[0, 1]``
        it returns in training mode (with targets of ``boxes`` ``FloatTensor[N, 4]``
        ``[x1, y1, x2, y2]`` in input pixels and ``labels`` ``Int64Tensor[N]``) the losses
        ``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg``;
        in eval mode one dict per image with ``boxes`` (``[x1, y1, x2, y2]``, input pixels),
        ``labels`` and ``scores``.

    Raises:
        InputError: An unknown backbone or attention name, ``num_classes < 2``, a
            `trainable_layers` out of range, or a weights file that is missing or unusable.

    """
    _check_choice("backbone", backbone, BACKBONES)
    _check_choice("attention", attention, ATTENTIONS)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InputError(
            "num_classes", f"must be an integer >= 2 (with background), got {num_classes!r}"
        )
    weights_path = None if weights is None else _existing_file(weights)
    body = build_backbone(
        backbone,
        attention,
        attention_options,
        pretrained=weights_path is not None,
        trainable_layers=trainable_layers,
    )
    model = FasterRCNN(
        body.module, num_classes=num_classes, **{**body.detector_defaults, **faster_rcnn_kwargs}
    )
    if weights_path is not None:
        logger.info(load_weights(model, weights_path, backbone).summary())
    return model


def load_weights(model: nn.Module, path: str | PathLike[str], backbone: str) -> WeightsReport:
    """Load the tensors of checkpoint `path` that fit `model` (a `build_detector` model).

    Args:
        model: The detector to initialise, in place.
        path: A detector state dict, a dict with a ``"state_dict"`` entry, or an ImageNet
            classification state dict of `backbone`.
        backbone: The model's backbone name (how to read ImageNet keys).

    Returns:
        The `WeightsReport`.

    Raises:
        InputError: The file is missing, unreadable, holds no state dict, or none of its
            tensors fits the model's backbone.

    """
    path = _existing_file(path)
    state = _read_state_dict(path)
    source = "detector"
    if not any(key.startswith(DETECTOR_PREFIXES) for key in state):
        source = "ImageNet backbone"
        state = {imagenet_key_to_detector(backbone, key): value for key, value in state.items()}
    own = model.state_dict()
    skipped = {k for k, v in state.items() if k in own and own[k].shape != v.shape}
    fitting = {k: v for k, v in state.items() if k not in skipped}
    loaded = sorted(k for k in fitting if k in own)
    if not any(key.startswith("backbone.body.") for key in loaded):
        raise InputError(
            path,
            f"none of its tensors fits the {backbone} backbone (a checkpoint of another model?)",
        )
    result = model.load_state_dict(fitting, strict=False)
    return WeightsReport(
        path,
        source,
        loaded,
        sorted(skipped),
        sorted(set(result.missing_keys) - skipped),
        sorted(result.unexpected_keys),
    )


def _check_choice(argument: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InputError(
            argument, f"unknown {argument} {value!r}; choose one of {', '.join(choices)}"
        )


WEIGHTS_NOT_FOUND = (
    "weights file not found (weights are never downloaded: pass a local checkpoint path)"
)


def _existing_file(path: str | PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, WEIGHTS_NOT_FOUND)
    return path


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    checkpoint = load_torch_file(
        path, missing=WEIGHTS_NOT_FOUND, unreadable="not a readable PyTorch checkpoint"
    )
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not (
        isinstance(checkpoint, Mapping)
        and checkpoint
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in checkpoint.items())
    ):
        raise InputError(
            path,
            "holds no state dict (a mapping of tensor names to tensors, or a dict with one "
            "under 'state_dict')",
        )
    return dict(checkpoint)


def _abbreviate(keys: Sequence[str], shown: int = 4) -> str:
    more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more
