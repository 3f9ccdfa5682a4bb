"""Model checkpoints (``model.pt``): the trained detector plus what is needed to use it.

Format ``dsnet-checkpoint/1``, a plain dict that loads with
``torch.load(..., weights_only=True)``::

    {
        "format": "dsnet-checkpoint/1",
        "model": {"backbone", "attention", "attention_residual", "attention_groups",
                  "attention_reduction", "num_classes", "min_size",
                  "max_size" (both = preprocess.canvas_px: the detector never resizes),
                  "anchor_sizes": [one per feature map, or empty for the builder's],
                  "detector": {extra FasterRCNN keyword arguments}},
        "preprocess": {"spacing_mm", "canvas_px", "windows"},  # the canonical frame
        "categories": [{"id": 1, "name": "normal"}, ...],
        "state_dict": {...},                          # CPU tensors
        "meta": {...},                                # epochs, seed, train time, device, ...
    }

`load_checkpoint` rebuilds the detector from ``model`` with `dsnet.models.build_detector`
and loads the weights, so a checkpoint is usable without ``params.yaml``. Checkpoints
written before the attention settings were parameters (``ds_residual``, no groups or
reduction) load with their old meaning: ``ds_residual`` is ``attention_residual``, and the
groups and reduction are the defaults they were built with.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator

from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_path
from dsnet.core.params_schema import SCHEMA, check_params, integer
from dsnet.core.torchfile import load_torch_file
from dsnet.data.classes import CATEGORIES
from dsnet.models import AttentionOptions, build_detector

CHECKPOINT_FORMAT = "dsnet-checkpoint/1"
MODEL_KEYS = ("backbone", "attention", "attention_residual")
ATTENTION_DEFAULTS = {
    "attention_groups": AttentionOptions.groups,
    "attention_reduction": AttentionOptions.reduction,
}
"""Attention settings a params file may leave out, with the values they then take."""
RENAMED_MODEL_KEYS = {"ds_residual": "attention_residual"}
"""Old checkpoint model-config key -> its current name."""
PREPROCESS_KEYS = ("spacing_mm", "canvas_px", "windows")
RESIZE_KEYS = ("min_size", "max_size")
"""torchvision's resize settings: set from ``preprocess.canvas_px``, never from params."""
FEATURE_MAPS = {"resnet50": 5, "mobilenet_v3": 3, "vgg16": 1}
"""Feature maps each backbone of `dsnet.models` gives the RPN (FPN levels incl. pool)."""


def model_config(
    model_params: Mapping[str, Any], num_classes: int, canvas_px: int
) -> dict[str, Any]:
    """Extract the architecture part of the ``model`` params section, as checkpoints store it.

    Args:
        model_params: The ``model`` section (``weights`` is an initialisation, not part
            of the architecture, and is left out).
        num_classes: Detector classes including background (4).
        canvas_px: ``preprocess.canvas_px``; torchvision's ``min_size`` and ``max_size``
            are set to it so that its transform scales every canvas by exactly 1.

    Returns:
        ``{backbone, attention, attention_residual, attention_groups, attention_reduction,
        num_classes, min_size, max_size, detector, anchor_sizes}``.

    Raises:
        InputError: A required key is missing, or ``min_size``/``max_size`` is given
            (the canvas decides them).

    """
    missing = [key for key in MODEL_KEYS if key not in model_params]
    if missing:
        raise InputError("params.model", f"missing key(s): {', '.join(missing)}")
    given = [key for key in RESIZE_KEYS if key in model_params]
    if given:
        raise InputError(
            f"params model.{given[0]}",
            "no longer a setting: the detector input is the preprocess.canvas_px canvas",
        )
    config = {key: copy.deepcopy(model_params[key]) for key in MODEL_KEYS}
    config.update({key: int(model_params.get(key, v)) for key, v in ATTENTION_DEFAULTS.items()})
    config["min_size"] = config["max_size"] = int(canvas_px)
    config["num_classes"] = int(num_classes)
    config["detector"] = dict(model_params.get("detector") or {})
    config["anchor_sizes"] = list(model_params.get("anchor_sizes") or [])
    return config


def build_model(
    config: Mapping[str, Any],
    weights: str | os.PathLike[str] | None = None,
    trainable_layers: int | None = None,
) -> torch.nn.Module:
    """Build the detector described by a `model_config` (random or `weights`-initialised).

    Args:
        config: Output of `model_config` (or a checkpoint's ``model`` entry).
        weights: Optional local initialisation checkpoint (e.g. COCO-pretrained); with it
            the backbone uses frozen BatchNorm and freezes its early stages.
        trainable_layers: Backbone stages left trainable (None: the builder's default,
            all from scratch, 3 with `weights`).

    Returns:
        A torchvision ``FasterRCNN`` in train mode on the CPU.

    Raises:
        InputError: Unknown backbone or attention names, or unusable weights (from
            `dsnet.models.build_detector`).

    """
    detector = dict(config.get("detector") or {})
    attention = {**ATTENTION_DEFAULTS, **config}  # older checkpoints lack groups/reduction
    if config.get("anchor_sizes") and config["backbone"] in FEATURE_MAPS:
        maps = FEATURE_MAPS[config["backbone"]]
        detector["rpn_anchor_generator"] = anchor_generator(config["anchor_sizes"], maps)
    return build_detector(
        config["backbone"],
        config["attention"],
        num_classes=int(config["num_classes"]),
        weights=weights,
        attention_options=AttentionOptions(
            residual=bool(config["attention_residual"]),
            groups=int(attention["attention_groups"]),
            reduction=int(attention["attention_reduction"]),
        ),
        trainable_layers=trainable_layers,
        min_size=int(config["min_size"]),
        max_size=int(config["max_size"]),
        **detector,
    )


def anchor_generator(sizes: Sequence[int], maps: int) -> torch.nn.Module:
    """RPN anchors for ``model.anchor_sizes`` on a backbone with `maps` feature maps.

    With one size per map (ResNet50-FPN: 5 sizes, 5 maps) map *i* gets size *i*, finest
    first; otherwise every map gets all sizes, torchvision's convention for its
    MobileNetV3 (3 maps) and single-map detectors. Aspect ratios 0.5, 1, 2 everywhere, so
    the same setting works for every backbone of an ablation.

    Args:
        sizes: Anchor sides in input pixels, ascending.
        maps: Feature maps the backbone gives the RPN (`FEATURE_MAPS`).

    Returns:
        A torchvision ``AnchorGenerator``.

    """
    sides = tuple(int(size) for size in sizes)
    per_map = tuple((side,) for side in sides) if len(sides) == maps else (sides,) * maps
    return AnchorGenerator(per_map, ((0.5, 1.0, 2.0),) * maps)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    model_cfg: Mapping[str, Any],
    preprocess: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> Path:
    """Write `model` as a ``dsnet-checkpoint/1`` file, atomically.

    Args:
        path: Destination, usually ``models/model.pt``.
        model: The detector (a DistributedDataParallel wrapper is unwrapped).
        model_cfg: Its `model_config`.
        preprocess: The ``preprocess`` section used in training (``spacing_mm``,
            ``canvas_px``, ``windows``; other keys are kept too).
        meta: Provenance (epochs, seed, train time, device, ...); plain values only.

    Returns:
        The written path.

    """
    module = model.module if hasattr(model, "module") else model
    state_dict = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model": copy.deepcopy(dict(model_cfg)),
        "preprocess": copy.deepcopy(dict(preprocess)),
        "categories": copy.deepcopy(CATEGORIES),
        "state_dict": state_dict,
        "meta": copy.deepcopy(dict(meta)),
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a checkpoint dict without building the model.

    Raises:
        InputError: The file is missing, not loadable with ``weights_only=True``, or not
            a ``dsnet-checkpoint/1`` dict with all its entries.

    """
    path = Path(path)
    checkpoint = load_torch_file(
        path, missing="checkpoint not found", unreadable="not a readable checkpoint"
    )
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else None
        raise InputError(path, f"format {found!r} is not {CHECKPOINT_FORMAT}")
    entries = ("model", "preprocess", "categories", "state_dict", "meta")
    missing = [key for key in entries if key not in checkpoint]
    if missing:
        raise InputError(path, f"checkpoint lacks {', '.join(missing)}")
    if isinstance(checkpoint["model"], dict):
        checkpoint["model"] = upgrade_model_config(checkpoint["model"])
    check_config(path, checkpoint)
    return checkpoint


def upgrade_model_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's model config with old key names (`RENAMED_MODEL_KEYS`) renamed."""
    return {RENAMED_MODEL_KEYS.get(key, key): value for key, value in config.items()}


def check_config(path: Path, checkpoint: Mapping[str, Any]) -> None:
    """Refuse a checkpoint whose model or preprocess config is malformed or absurd.

    The values are checked like the parameters they came from (`dsnet.core.params_schema`),
    so a bad value blames the checkpoint, not the slice it is later applied to.

    Raises:
        InputError: Naming `path` and the config key.

    """
    for name, keys in (("model", MODEL_KEYS), ("preprocess", PREPROCESS_KEYS)):
        config = checkpoint[name]
        if not isinstance(config, Mapping):
            raise InputError(path, f"checkpoint {name} config is not a mapping")
        lacking = [key for key in keys if key not in config]
        if lacking:
            raise InputError(path, f"checkpoint {name} config lacks {', '.join(lacking)}")
        known = {k: v for k, v in config.items() if k in SCHEMA[name]}
        try:
            check_params({name: known}, "checkpoint")
        except InputError as exc:
            key = exc.path.removeprefix("params ").removesuffix(" (checkpoint)")
            raise InputError(path, f"checkpoint config {key}: {exc.reason}") from None
    for key in RESIZE_KEYS:  # set from the canvas, so not parameters of their own
        problem = integer(32, 4096)(checkpoint["model"][key])
        if problem:
            raise InputError(path, f"checkpoint config model.{key}: {problem}")


def load_checkpoint(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the detector of a ``model.pt`` and load its weights.

    Args:
        path: A ``dsnet-checkpoint/1`` file.
        device: Where to put the model.

    Returns:
        ``(model, checkpoint)``: the detector in eval mode on `device` (it takes a list
        of FloatTensor[3, H, W] in [0, 1] and returns boxes in x1, y1, x2, y2 input
        pixels), and the checkpoint dict (``model``, ``preprocess``, ``categories``,
        ``meta``; ``state_dict`` on the CPU).

    Raises:
        InputError: Unreadable file, wrong format, a checkpoint without the canonical
            frame (``preprocess.canvas_px``, detector sizes equal to it), or weights that
            do not fit the architecture the checkpoint describes.

    """
    checkpoint = read_checkpoint(path)
    _check_canonical_frame(path, checkpoint)
    model = build_model(checkpoint["model"])
    try:
        result = model.load_state_dict(checkpoint["state_dict"], strict=False)
    except RuntimeError as exc:  # tensors of the wrong shape
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise InputError(path, f"weights do not fit its model config: {lines[-1]}") from None
    # A model trained from pretrained weights has frozen BatchNorm, which keeps no batch
    # counter; rebuilt without weights it has plain BatchNorm, identical in eval mode.
    missing = [k for k in result.missing_keys if not k.endswith(".num_batches_tracked")]
    problems = [
        f"{len(keys)} {kind} tensor(s), e.g. {keys[0]}"
        for kind, keys in (("missing", missing), ("unexpected", result.unexpected_keys))
        if keys
    ]
    if problems:
        raise InputError(path, f"weights do not fit its model config: {'; '.join(problems)}")
    model.eval()
    return model.to(device), checkpoint


def _check_canonical_frame(path: Path | str | os.PathLike[str], checkpoint: Mapping) -> None:
    """Refuse a checkpoint whose detector would resize its input (older format)."""
    preprocess, model = checkpoint["preprocess"], checkpoint["model"]
    missing = [key for key in PREPROCESS_KEYS if key not in preprocess]
    if missing:
        raise InputError(
            path, f"checkpoint predates the canonical frame (no preprocess.{missing[0]}); retrain"
        )
    canvas = int(preprocess["canvas_px"])
    if not int(model.get("min_size", -1)) == int(model.get("max_size", -1)) == canvas:
        raise InputError(
            path,
            f"detector sizes {model.get('min_size')}/{model.get('max_size')} differ from the "
            f"canvas {canvas} px: its transform would rescale the input",
        )
