"""Tiny models and data sets shared by the model, evaluation, prediction and ablation tests.

Each builder takes the folder to write into, so callers keep their own fixture scope.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

PREPROCESS = {"spacing_mm": 1.5, "canvas_px": 128, "windows": [[-200, 1200], [0, 400], [-160, 240]]}
"""The ``preprocess`` section stored in the tiny checkpoints."""


def untrained_checkpoint(folder: Path, meta: Mapping[str, Any]) -> Path:
    """Save a real dsnet checkpoint of an untrained MobileNetV3 detector (128 px input).

    Args:
        folder: Where ``model.pt`` is written.
        meta: The checkpoint's provenance dict.

    Returns:
        The path of ``model.pt``; the weights are the same on every call (seed 0).

    """
    from dsnet.models.checkpoint import build_model, model_config, save_checkpoint

    torch.manual_seed(0)
    config = model_config(
        {"backbone": "mobilenet_v3", "attention": "none", "attention_residual": True},
        num_classes=4,
        canvas_px=PREPROCESS["canvas_px"],
    )
    return save_checkpoint(folder / "model.pt", build_model(config), config, PREPROCESS, meta)


def synthetic_split(root: Path, seed: int) -> tuple[Path, Path]:
    """Write three synthetic patients (one slice per vertebra) and a patient-level split.

    Args:
        root: Folder that receives ``data/`` and ``split.json``.
        seed: Seed of the synthetic data set.

    Returns:
        ``(root / "data", root / "split.json")``; the split holds out 0.34 of the patients
        (split seed 0).

    """
    from dsnet.data.contract import load_data_dir
    from dsnet.data.split import split_patients, write_split
    from dsnet.synth.generate import synthesize

    synthesize(root / "data", patients=3, seed=seed, slices_per_vertebra=1)
    write_split(split_patients(load_data_dir(root / "data"), 0.34, 0), root / "split.json")
    return root / "data", root / "split.json"
