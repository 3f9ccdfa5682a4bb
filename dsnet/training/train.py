"""The training step: data dir + split + params -> ``model.pt`` and its training record.

``train`` reads the ``preprocess``, ``model`` and ``train`` sections of the parameters,
trains the detector with SGD (linear warm-up, then multistep decay) on the training
patients of the split, and writes (rank 0 only, each file atomically):

- ``<out>/model.pt``        the final ``dsnet-checkpoint/1`` (see `dsnet.models.checkpoint`);
- ``<out>/last.ckpt``       the resume state, after every epoch (see `dsnet.training.resume`);
- ``<out>/train_run.json``  MLflow run id, epochs, final loss, images/s, lineage;
- ``<plots>/train_loss.csv`` one row per epoch (loss, its components, lr, images/s).

It runs on one CPU/GPU, or on several processes with DistributedDataParallel when
started by ``torchrun`` (see `dsnet.training.distributed`). Per-epoch metrics go to the
MLflow run opened through `dsnet.tracking.runs`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsnet import __version__
from dsnet.core.config import section
from dsnet.core.device import (
    autocast_dtype,
    configure_backends,
    configure_threads,
    select_device,
)
from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_write_json
from dsnet.data.classes import CATEGORIES
from dsnet.data.contract import load_data_dir
from dsnet.data.dataset import CTDetectionDataset, Preprocess
from dsnet.data.split import read_split
from dsnet.models.checkpoint import build_model, model_config, save_checkpoint
from dsnet.models.layout import use_channels_last
from dsnet.tracking.lineage import lineage_tags
from dsnet.tracking.runs import NullTracker, start_run
from dsnet.training import distributed
from dsnet.training.data import build_train_loader
from dsnet.training.distributed import DistContext
from dsnet.training.history import write_loss_csv
from dsnet.training.loop import TrainingDivergedError, train_one_epoch
from dsnet.training.optim import build_optimizer, build_scheduler
from dsnet.training.progress import TrainingProgress
from dsnet.training.resume import capture_rng, load_resume_state, restore_rng, save_resume_state

MODEL_FILE = "model.pt"
RESUME_FILE = "last.ckpt"
RUN_FILE = "train_run.json"
LOSS_CSV = "train_loss.csv"

__all__ = ["TrainResult", "TrainingDivergedError", "train"]


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes:
        model_path: The final checkpoint ``model.pt``.
        resume_path: The resume state ``last.ckpt``.
        run_path: ``train_run.json``.
        loss_csv: ``train_loss.csv`` (per-epoch history).
        run_id: MLflow run id (None with tracking off, and on ranks other than 0).
        epochs: Epochs completed in total (including those before a resume).
        final_loss: Mean total loss of the last epoch.
        images_per_s: Training throughput over all epochs, all ranks together.
        train_seconds: Wall time spent in epochs (including those before a resume).
        device: The device of rank 0 (``cpu``, ``cuda:0``).
        world_size: Number of training processes.
        model: The trained detector (unwrapped from DDP, on the training device, eval
            mode); every rank holds the same weights.

    """

    model_path: Path
    resume_path: Path
    run_path: Path
    loss_csv: Path
    run_id: str | None
    epochs: int
    final_loss: float
    images_per_s: float
    train_seconds: float
    device: str
    world_size: int
    model: torch.nn.Module = field(repr=False, compare=False)


def train(
    data_dir: str | os.PathLike[str],
    split_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    params: Mapping[str, Any],
    resume: bool = False,
    plots_dir: str | os.PathLike[str] = "plots",
) -> TrainResult:
    """Train the detector on the training patients of a split.

    Args:
        data_dir: A data dir (docs/data.md).
        split_path: ``split.json`` with the ``train`` patient ids.
        out_dir: Folder for ``model.pt``, ``last.ckpt`` and ``train_run.json``.
        params: Resolved parameters (sections ``preprocess``, ``model``, ``train``).
        resume: Continue from ``<out_dir>/last.ckpt`` (model, optimizer, schedule, scaler,
            epoch, random states) up to ``train.epochs``.
        plots_dir: Folder for ``train_loss.csv``.

    Returns:
        The `TrainResult`.

    Raises:
        InputError: Bad data dir, split, parameters or resume state.
        TrainingDivergedError: The loss became non-finite; files saved before the run
            (``model.pt`` of an earlier run) are left as they were.

    """
    train_cfg = section(params, "train")
    for folder in (Path(out_dir), Path(plots_dir)):  # refuse before, not after, an epoch
        if folder.exists() and not folder.is_dir():
            raise InputError(folder, "is a file; expected a folder")
    ctx = distributed.from_env()
    device = select_device(train_cfg.get("device", "auto"), ctx.local_rank)
    configure_threads(train_cfg.get("threads", "auto"), ctx.local_world_size)
    configure_backends(train_cfg.get("cudnn_benchmark", True))
    distributed.init_process_group(ctx, device)
    try:
        return _train(
            Path(data_dir), Path(split_path), Path(out_dir), Path(plots_dir),
            params, resume, ctx, device,
        )  # fmt: skip
    finally:
        distributed.destroy_process_group(ctx)


def _train(
    data_dir: Path,
    split_path: Path,
    out_dir: Path,
    plots_dir: Path,
    params: Mapping[str, Any],
    resume: bool,
    ctx: DistContext,
    device: torch.device,
) -> TrainResult:

    train_cfg, preprocess = section(params, "train"), section(params, "preprocess")
    model_params = section(params, "model")
    epochs = _positive_int(train_cfg, "epochs")
    seed = int(train_cfg.get("seed", 0))
    precision = autocast_dtype(
        device, train_cfg.get("amp", False), train_cfg.get("cpu_bf16", False)
    )
    canvas_px = Preprocess.from_params(preprocess).canvas_px
    cfg = model_config(model_params, num_classes=len(CATEGORIES) + 1, canvas_px=canvas_px)
    paths = _output_paths(out_dir, plots_dir)

    seed_everything(seed)
    dataset = _training_set(data_dir, split_path, preprocess, train_cfg.get("augment"), seed)
    generator = torch.Generator().manual_seed(seed)
    loader, sampler = build_train_loader(
        dataset,
        batch_size=_positive_int(train_cfg, "batch_size"),
        workers=int(train_cfg.get("workers", 0)),
        generator=generator,
        seed=seed,
        ctx=ctx,
        pin_memory=device.type == "cuda",
    )
    model = build_model(
        cfg,
        weights=model_params.get("weights"),
        trainable_layers=model_params.get("trainable_layers"),
    ).to(device)
    if train_cfg.get("channels_last", False):
        use_channels_last(model)
    optimizer = build_optimizer(model, train_cfg)
    scheduler = build_scheduler(optimizer, train_cfg, iters_per_epoch=len(loader))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == torch.float16)

    start_epoch, history, run_id = 0, [], None
    if resume:
        state = load_resume_state(paths["resume"])
        if state["model_config"] != cfg:
            raise InputError(
                paths["resume"],
                f"was written for model {state['model_config']}, params now ask for {cfg}; "
                "train without --resume or restore the model params",
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"], generator)
        start_epoch, history, run_id = int(state["epoch"]), list(state["history"]), state["run_id"]

    if ctx.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    lineage = _lineage(data_dir, params) if ctx.is_main else {}
    progress = TrainingProgress(
        ctx.is_main, len(loader) * max(epochs - start_epoch, 0), start_epoch + 1, epochs
    )
    with _tracker(ctx, params, lineage, run_id, data_dir) as run, progress:
        progress.log(
            f"training {cfg['backbone']}+{cfg['attention']} on {len(dataset)} images, "
            f"{device} x{ctx.world_size}, epochs {start_epoch + 1}..{epochs}"
        )
        for epoch in range(start_epoch + 1, epochs + 1):
            dataset.set_epoch(epoch)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            progress.start_epoch(epoch)
            stats = train_one_epoch(
                model, loader, optimizer, scheduler, scaler,
                epoch=epoch, device=device, autocast=precision,
                clip_grad_norm=train_cfg.get("clip_grad_norm"), ctx=ctx, progress=progress,
            )  # fmt: skip
            history.append({**stats.row(), "images": stats.images, "seconds": stats.seconds})
            progress.log(_epoch_line(stats.row(), epochs))
            if ctx.is_main:
                write_loss_csv(paths["loss_csv"], history)
                save_resume_state(
                    paths["resume"],
                    {
                        "epoch": epoch,
                        "model_config": cfg,
                        "model": _unwrap(model).state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": capture_rng(generator),
                        "history": history,
                        "run_id": run.run_id,
                    },
                )
                run.log_metrics({k: v for k, v in stats.row().items() if k != "epoch"}, epoch)
            distributed.barrier(ctx)

        distributed.broadcast_buffers(_unwrap(model), ctx)
        result = _result(paths, history, run.run_id, device, ctx, _unwrap(model).eval())
        if ctx.is_main:
            meta = {
                "epochs": result.epochs,
                "seed": seed,
                "train_seconds": result.train_seconds,
                "images_per_s": result.images_per_s,
                "final_loss": result.final_loss,
                "device": _device_name(device),
                "world_size": ctx.world_size,
                "precision": str(precision or torch.float32).removeprefix("torch."),
                "run_id": run.run_id,
                "dsnet_version": __version__,
                "torch_version": str(torch.__version__),
                "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                **lineage,
            }
            save_checkpoint(paths["model"], model, cfg, preprocess, meta)
            atomic_write_json(paths["run"], _run_record(result, lineage, start_epoch))
            run.log_artifact(paths["loss_csv"], "plots")
            run.log_artifact(paths["run"])
            progress.log(
                f"wrote {paths['model']} ({result.epochs} epochs, loss {result.final_loss:.4f}, "
                f"{result.images_per_s:.2f} images/s, run {run.run_id})"
            )
        distributed.barrier(ctx)
    return result


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global random-number generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _training_set(
    data_dir: Path, split_path: Path, preprocess: Mapping[str, Any], augment: Any, seed: int
) -> torch.utils.data.Dataset:
    """Build the dataset of the split's training patients (`InputError` on bad inputs)."""
    data = load_data_dir(data_dir)
    patients = read_split(split_path, data)["train"]
    if not patients:
        raise InputError(split_path, "no train patients")
    return CTDetectionDataset(data, patients, preprocess, augment, seed=seed)


def _positive_int(train_cfg: Mapping[str, Any], key: str) -> int:
    value = train_cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"train.{key}", f"must be a positive integer, got {value!r}")
    return value


def _output_paths(out_dir: Path, plots_dir: Path) -> dict[str, Path]:
    return {
        "model": out_dir / MODEL_FILE,
        "resume": out_dir / RESUME_FILE,
        "run": out_dir / RUN_FILE,
        "loss_csv": plots_dir / LOSS_CSV,
    }


def _lineage(data_dir: Path, params: Mapping[str, Any]) -> dict[str, str]:

    return lineage_tags(data_dir, params)


@contextlib.contextmanager
def _tracker(
    ctx: DistContext,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    run_id: str | None,
    data_dir: Path,
) -> Iterator[Any]:
    """Open the training's MLflow run on rank 0 (data input, system metrics); others: no-op."""
    if not ctx.is_main:
        yield NullTracker()
        return
    with start_run("train", params=params, tags=tags, run_id=run_id, system_metrics=True) as run:
        if tags.get("data_version"):
            run.log_dataset(data_dir, tags["data_version"], "training")
        yield run


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _result(
    paths: Mapping[str, Path],
    history: list[dict[str, Any]],
    run_id: str | None,
    device: torch.device,
    ctx: DistContext,
    model: torch.nn.Module,
) -> TrainResult:
    """Summarise the whole `history` (epochs before a resume included)."""
    seconds = sum(row["seconds"] for row in history)
    images = sum(row["images"] for row in history)
    return TrainResult(
        model_path=paths["model"],
        resume_path=paths["resume"],
        run_path=paths["run"],
        loss_csv=paths["loss_csv"],
        run_id=run_id,
        epochs=int(history[-1]["epoch"]),
        final_loss=float(history[-1]["loss"]),
        images_per_s=images / seconds if seconds > 0 else 0.0,
        train_seconds=seconds,
        device=str(device),
        world_size=ctx.world_size,
        model=model,
    )


def _run_record(result: TrainResult, lineage: Mapping[str, str], start_epoch: int) -> dict:
    return {
        "run_id": result.run_id,
        "epochs": result.epochs,
        "resumed_from_epoch": start_epoch or None,
        "final_loss": result.final_loss,
        "images_per_s": result.images_per_s,
        "train_seconds": result.train_seconds,
        "device": result.device,
        "world_size": result.world_size,
        "model": str(result.model_path),
        **lineage,
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"


def _epoch_line(row: Mapping[str, Any], epochs: int) -> str:
    parts = " ".join(
        f"{name.removeprefix('loss_')} {value:.4f}"
        for name, value in row.items()
        if name.startswith("loss_")
    )
    return (
        f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f} ({parts}) "
        f"lr {row['lr']:.2e} {row['images_per_s']:.2f} images/s"
    )
