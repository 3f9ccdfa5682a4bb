"""The pipeline's ``Model`` artifact: what evaluation and registration need, nothing more.

Training writes ``model.pt`` (the checkpoint), ``last.ckpt`` (the resume state: optimizer,
schedule and scaler, about twice the model's size), ``train_run.json`` (the MLflow run id)
and ``plots/train_loss.csv``. Evaluation reads ``model.pt``, ``train_run.json`` and the loss
curve; registration ``model.pt`` and ``train_run.json``. The resume state is scratch of the
training step, so the artifact the launcher uploads and every later step downloads leaves
it out.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dsnet.core.errors import InputError

MODEL_FILES = ("model.pt", "train_run.json")
MODEL_DIRS = ("plots",)


def publish_model(
    train_dir: str | os.PathLike[str], model_dir: str | os.PathLike[str]
) -> list[str]:
    """Copy the checkpoint, its training record and plots from `train_dir` into `model_dir`.

    Args:
        train_dir: Training's output folder (``model.pt``, ``last.ckpt``, ...).
        model_dir: The ``Model`` artifact's folder (created).

    Returns:
        The relative paths copied, sorted.

    Raises:
        InputError: `train_dir` holds no ``model.pt``.
    """
    train_dir, model_dir = Path(train_dir), Path(model_dir)
    if not (train_dir / "model.pt").is_file():
        raise InputError(train_dir / "model.pt", "training wrote no checkpoint")
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (train_dir / name).is_file():
            shutil.copyfile(train_dir / name, model_dir / name)
    for name in MODEL_DIRS:
        if (train_dir / name).is_dir():
            shutil.copytree(train_dir / name, model_dir / name, dirs_exist_ok=True)
    return sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file())
