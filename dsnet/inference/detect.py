"""Run the detector on one CT slice: model input, forward pass, boxes in original pixels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from dsnet.core.config import section
from dsnet.inference.results import SliceDetections
from dsnet.io import CTSlice, boxes_to_original, to_model_input
from dsnet.models.hu_baseline import HU_THRESHOLDS

DEFAULT_DECISION_THRESHOLD = 0.5
"""Detections scoring below this are not reported (``evaluate.decision_threshold``)."""


def model_input(ct: CTSlice, preprocess: Mapping[str, Any]) -> tuple[Any, tuple[float, float]]:
    """Build the detector input of a slice, as in training (`dsnet.io.to_model_input`).

    Returns:
        ``(image, scale)``: FloatTensor[3, H', W'] in [0, 1] at the canonical spacing, and
        ``(sy, sx)`` original pixels per model pixel.

    """
    image, scale = to_model_input(
        ct.hu, ct.spacing, float(preprocess["spacing_mm"]), preprocess["windows"]
    )
    return torch.from_numpy(image), scale


def detect(
    model: Any, image: Any, scale: tuple[float, float], shape: tuple[int, int], device: Any
) -> SliceDetections:
    """Run the detector on one model input and map its boxes to original pixels.

    Args:
        model: Faster R-CNN in eval mode on `device`.
        image: FloatTensor[3, H', W'] (from `model_input`).
        scale: ``(sy, sx)`` original pixels per model pixel.
        shape: ``(H, W)`` of the original slice; boxes are clipped to ``[0, W] x [0, H]``.
        device: torch device of the model.

    Returns:
        The slice's detections in original pixels, by descending score.

    """
    with torch.inference_mode():
        output = model([image.to(device)])[0]
    boxes = output["boxes"].detach().float().cpu().numpy().astype(np.float64)
    boxes = boxes_to_original(boxes, scale)
    height, width = shape
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0.0, float(width))
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0.0, float(height))
    scores = output["scores"].detach().float().cpu().numpy().astype(np.float64)
    labels = output["labels"].detach().cpu().numpy().astype(np.int64)
    order = np.argsort(-scores, kind="stable")
    return SliceDetections(boxes[order], labels[order], scores[order])


def inference_settings(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Decision threshold, HU thresholds, device and backend flags from ``params["evaluate"]``."""
    cfg = section(params or {}, "evaluate")
    return {
        "threshold": float(cfg.get("decision_threshold", DEFAULT_DECISION_THRESHOLD)),
        "hu_thresholds": tuple(float(t) for t in cfg.get("hu_thresholds", HU_THRESHOLDS)),
        "device": cfg.get("device", "auto"),
        "channels_last": bool(cfg.get("channels_last", False)),
        "cudnn_benchmark": bool(cfg.get("cudnn_benchmark", True)),
    }
