"""Get a detector to run: a checkpoint file or model URI resolved to a local ``model.pt``, loaded.

A model is a ``model.pt`` path or an MLflow model URI (``models:/dsnet@champion``,
``runs:/<id>/model``, an artifact or S3 location); URIs are downloaded once into a cache
(``DSNET_MODEL_CACHE``) and the pyfunc's checkpoint artifact is used.
"""

from __future__ import annotations

import hashlib
import os
from os import PathLike
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_dir
from dsnet.models.checkpoint import load_checkpoint, read_checkpoint
from dsnet.models.layout import use_channels_last
from dsnet.tracking.runs import configure_mlflow, tracking_uri

CACHE_ENV = "DSNET_MODEL_CACHE"


def checkpoint_model_config(model_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the ``model`` entry (backbone, attention, ...) of a checkpoint."""
    return dict(read_checkpoint(model_path)["model"])


def checkpoint_from_uri(uri: str) -> Path:
    """Return the local ``model.pt`` of a logged or registered pyfunc model.

    Args:
        uri: ``models:/dsnet@champion``, ``models:/dsnet/3``, ``models:/m-<id>``,
            ``runs:/<run_id>/model``, any artifact URI of the model folder, or a local
            folder of a downloaded model.

    Returns:
        The checkpoint inside a local copy of the model, cached under
        ``$DSNET_MODEL_CACHE`` (default ``~/.cache/dsnet/models``) by resolved source.

    Raises:
        InputError: Unknown model, version or alias, or no checkpoint in the model.

    """
    local = Path(uri)
    if local.is_dir():
        return _find_checkpoint(local, uri)

    configure_mlflow()
    source = _resolve_source(uri)
    key = hashlib.sha256(f"{tracking_uri()}|{source}".encode()).hexdigest()[:20]
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dsnet" / "models") / key
    if not cache.is_dir():
        try:
            with atomic_dir(cache) as scratch:
                mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(scratch))
        except MlflowException as exc:
            raise InputError(uri, f"cannot download the model ({exc.message})") from None
    return _find_checkpoint(cache, uri)


def _resolve_source(uri: str) -> str:
    """Resolve a registry URI (alias or version) to the version's download URI."""
    if not uri.startswith("models:/") or uri.startswith("models:/m-"):
        return uri

    name_and_ref = uri.removeprefix("models:/").rstrip("/")
    client = mlflow.MlflowClient()
    try:
        if "@" in name_and_ref:
            name, alias = name_and_ref.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = name_and_ref.rpartition("/")
            version = client.get_model_version(name, number)
    except MlflowException as exc:
        raise InputError(uri, f"no such registered model version ({exc.message})") from None
    return (
        f"models:/{version.name}/{version.version}"
        if not version.model_id
        else (f"models:/{version.model_id}")
    )


def _find_checkpoint(folder: Path, uri: str) -> Path:
    found = sorted((folder / "artifacts").glob("*.pt")) or sorted(folder.rglob("*.pt"))
    if not found:
        raise InputError(uri, "the model holds no dsnet checkpoint (*.pt) artifact")
    return found[0]


MODEL_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "s3://", "http://", "https://")


def resolve_model(model: str | PathLike[str]) -> Path:
    """Turn a checkpoint path or an MLflow model URI into a local ``model.pt`` path.

    Args:
        model: A checkpoint file (``models/model.pt``), an MLflow URI such as
            ``models:/dsnet@champion`` or ``runs:/<run_id>/model``, or the local folder
            of a downloaded MLflow model.

    Returns:
        The local checkpoint path.

    Raises:
        InputError: The file does not exist (URIs raise from `checkpoint_from_uri`).

    """
    text = str(model)
    if text.startswith(MODEL_URI_SCHEMES) or Path(text).is_dir():
        return Path(checkpoint_from_uri(text))
    path = Path(text)
    if not path.is_file():
        raise InputError(path, "model checkpoint not found" if not path.exists() else "not a file")
    return path


def load_detector(
    model_path: str | PathLike[str],
    device: Any,
    score_threshold: float,
    channels_last: bool = False,
):
    """Load a checkpoint for inference.

    Args:
        model_path: A ``dsnet-checkpoint`` file (`dsnet.models.checkpoint`).
        device: torch device to run on.
        score_threshold: The detector drops boxes scoring below this
            (``roi_heads.score_thresh``).
        channels_last: Store the weights and feed the backbone channels-last
            (``evaluate.channels_last``, `dsnet.models.layout`).

    Returns:
        ``(model, checkpoint)``: the torchvision Faster R-CNN in eval mode on `device`,
        and the checkpoint dict (``preprocess``, ``categories``, ``model``, ``meta``).

    Raises:
        InputError: The checkpoint cannot be loaded
            (`dsnet.models.checkpoint.load_checkpoint`), e.g. it predates the canonical frame.

    """
    model, ckpt = load_checkpoint(model_path, device)
    model.roi_heads.score_thresh = float(score_threshold)
    model.eval()
    if channels_last:
        use_channels_last(model)
    return model, ckpt
