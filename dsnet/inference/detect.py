"""Run the detector on one CT slice: canonical-frame input, forward pass, stored-grid boxes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from dsnet.core.config import section
from dsnet.inference.results import SliceDetections
from dsnet.io import CanonicalPlacement, CTSlice, to_canonical
from dsnet.models.hu_baseline import HU_THRESHOLDS, box_mean_hu

DEFAULT_DECISION_THRESHOLD = 0.5
"""Detections scoring below this are not reported (``evaluate.decision_threshold``)."""


def model_input(ct: CTSlice, preprocess: Mapping[str, Any]) -> tuple[Any, CanonicalPlacement]:
    """Build the detector input of a slice, as in training (`dsnet.io.to_canonical`).

    Args:
        ct: The slice (its ``frame`` orients it).
        preprocess: The checkpoint's ``preprocess`` (``spacing_mm``, ``canvas_px``,
            ``windows``).

    Returns:
        ``(image, placement)``: FloatTensor[3, canvas_px, canvas_px] in [0, 1] in the
        canonical frame, and where the slice lies on the canvas.

    """
    image, placement = to_canonical(
        ct.hu,
        ct.frame,
        float(preprocess["spacing_mm"]),
        int(preprocess["canvas_px"]),
        preprocess["windows"],
    )
    return torch.from_numpy(image), placement


def detect(model: Any, image: Any, placement: CanonicalPlacement, device: Any) -> SliceDetections:
    """Run the detector on one model input and map its boxes to the stored pixel grid.

    Args:
        model: Faster R-CNN in eval mode on `device`.
        image: FloatTensor[3, canvas_px, canvas_px] (from `model_input`).
        placement: Where the slice lies on the canvas (from `model_input`).
        device: torch device of the model.

    Returns:
        The slice's detections in stored pixels (clipped to the image), by descending score.

    """
    with torch.inference_mode():
        output = model([image.to(device)])[0]
    boxes = output["boxes"].detach().float().cpu().numpy().astype(np.float64)
    boxes = placement.canvas_to_stored(boxes)
    scores = output["scores"].detach().float().cpu().numpy().astype(np.float64)
    labels = output["labels"].detach().cpu().numpy().astype(np.int64)
    order = np.argsort(-scores, kind="stable")
    return SliceDetections(boxes[order], labels[order], scores[order])


def slice_box_mean_hu(ct: CTSlice, box_xyxy: Sequence[float]) -> float:
    """Trabecular mean HU of a box on a slice, its ROI placed in the radiological frame.

    The ROI's anterior shift (`dsnet.models.hu_baseline`) needs anterior up, so the slice
    and the box go to the display frame first, whatever the slice's storage.

    Args:
        ct: The slice (its ``frame`` orients it).
        box_xyxy: (x1, y1, x2, y2) in pixel-edge coordinates of the stored grid.

    Returns:
        The mean HU of the box's trabecular ROI, or ``nan`` when the box has no area
        inside the image (`dsnet.models.hu_baseline.box_mean_hu`).

    """
    frame = ct.frame
    box = frame.boxes_to_display(np.asarray([box_xyxy], dtype=np.float64))[0]
    return box_mean_hu(frame.to_display(ct.hu), box)


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
