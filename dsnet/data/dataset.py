"""The torchvision detection dataset over a data dir, its collate function and loader.

Each item is one slice: read with `dsnet.io.read_slice`, (training only) shifted by a
global HU offset, turned into the model input by `dsnet.io.to_canonical` (radiological
display frame, resampled to ``preprocess.spacing_mm``, placed on the
``preprocess.canvas_px`` canvas, one channel per HU window in ``preprocess.windows``), the
same code as evaluation and prediction; (training only) zoomed - resampled at
``spacing_mm / zoom`` onto the same canvas - and mirrored, boxes following
(`dsnet.data.augment`).

Determinism and workers: the augmentation of item ``i`` is drawn from
``numpy.random.default_rng((seed, epoch, i))``, so it does not depend on the worker that
loads it or on the order; call `set_epoch` before each epoch's iterator is created
(workers receive a copy of the dataset when the iterator starts, so keep
``persistent_workers=False``). The dataset holds only paths and small arrays: no file is
open between items, so forking workers is safe.

No cache: reading a 512 x 512 slice costs ~2 ms of the ~6 ms an item takes, the loader
already outruns CPU training many times over (`dsnet bench loader`), and per-worker caches
of non-persistent workers are rebuilt every epoch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from dsnet.core.errors import InputError
from dsnet.data import augment as aug
from dsnet.data.contract import DataDir
from dsnet.io import read_slice, to_canonical
from dsnet.io.canonical import check_canvas


@dataclass(frozen=True)
class Preprocess:
    """Validated ``preprocess`` params: canonical spacing (mm), canvas side (px), HU windows."""

    spacing_mm: float
    canvas_px: int
    windows: tuple[tuple[float, float], ...]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Preprocess:
        """Build from the ``preprocess`` mapping, raising `InputError` on bad values."""
        spacing = params.get("spacing_mm")
        if isinstance(spacing, bool) or not isinstance(spacing, int | float) or spacing <= 0:
            raise InputError(
                "params preprocess.spacing_mm", f"{spacing!r} is not a positive number"
            )
        try:
            canvas = check_canvas(params.get("canvas_px"))
        except ValueError as exc:
            raise InputError("params preprocess.canvas_px", str(exc).split(": ", 1)[1]) from None
        windows = params.get("windows")
        try:
            pairs = tuple((float(low), float(high)) for low, high in windows)
        except (TypeError, ValueError):
            raise InputError(
                "params preprocess.windows", "expected a list of [low, high] HU"
            ) from None
        if not pairs or any(high <= low for low, high in pairs):
            raise InputError(
                "params preprocess.windows", f"{windows!r}: need low < high, >= 1 window"
            )
        return cls(spacing_mm=float(spacing), canvas_px=canvas, windows=pairs)


@dataclass(frozen=True)
class _Entry:
    path: Path
    image_id: int
    boxes: np.ndarray  # float32 [N, 4] xyxy, stored pixels
    labels: np.ndarray  # int64 [N], 1..3


class CTDetectionDataset(Dataset):
    """Slices of the given patients as torchvision detection samples.

    Args:
        data: The validated data dir.
        patient_ids: Patients whose slices to use (e.g. a side of split.json).
        preprocess: params ``preprocess`` (``spacing_mm``, ``canvas_px``, ``windows``).
        augment: params ``train.augment`` (``hflip``, ``intensity_jitter_hu``, ``scale``),
            or None for none (evaluation).
        seed: Seeds the augmentation draws.

    Items are ``(image, target)``:
        image: FloatTensor [C, canvas_px, canvas_px] in [0, 1], C = number of windows, in
            the radiological display frame at ``spacing_mm`` per pixel.
        target: ``boxes`` FloatTensor [N, 4] (x1, y1, x2, y2) in canvas pixels, ``labels``
            Int64Tensor [N] (1 normal, 2 osteopenia, 3 osteoporosis), ``image_id`` int
            (COCO image id), ``placement`` the item's `dsnet.io.CanonicalPlacement` (its
            ``canvas_to_stored`` maps the canvas boxes of an un-mirrored item back to the
            stored pixel grid; a zoom is part of its scale).

    """

    def __init__(
        self,
        data: DataDir,
        patient_ids: Iterable[str],
        preprocess: Mapping[str, Any],
        augment: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        self.preprocess = Preprocess.from_params(preprocess)
        self.augment = aug.AugmentConfig.from_params(augment) if augment is not None else None
        self.seed = seed
        self.epoch = 0
        self.entries = [_entry(data, image) for image in data.images_of(patient_ids)]

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of `epoch` (call before creating the iterator)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        entry = self.entries[index]
        try:
            ct = read_slice(entry.path)
        except InputError as exc:
            if get_worker_info() is None:
                raise
            raise WorkerInputError(json.dumps([exc.path, exc.reason])) from None
        draw = aug.AugmentDraw()
        if self.augment is not None:
            draw = aug.draw(self.augment, np.random.default_rng((self.seed, self.epoch, index)))
        pre, frame = self.preprocess, ct.frame
        image, placement = to_canonical(
            ct.hu + np.float32(draw.hu_offset),
            frame,
            pre.spacing_mm / draw.zoom,
            pre.canvas_px,
            pre.windows,
        )
        boxes, keep = aug.clip_boxes(placement.stored_to_canvas(entry.boxes), pre.canvas_px)
        labels = entry.labels[keep]
        if draw.mirror:
            image, boxes = aug.mirror(image, boxes)
        target = {
            "boxes": torch.from_numpy(boxes.astype(np.float32).reshape(-1, 4)),
            "labels": torch.from_numpy(labels.copy()),
            "image_id": entry.image_id,
            "placement": placement,
        }
        return torch.from_numpy(image), target


class WorkerInputError(Exception):
    """An `InputError` of a DataLoader worker, on its way to the main process.

    A worker's exception is re-created in the main process from one string (its
    traceback), which `InputError(path, reason)` cannot take. This one's message is the
    JSON ``[path, reason]``, the last line of that traceback, so it survives the trip;
    `InputErrorLoader` turns it back into the `InputError` (one line naming the file).

    Attributes:
        path: The file the worker could not read.
        reason: Why.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        last = [line for line in str(message).splitlines() if line.strip()][-1]
        self.path, self.reason = json.loads(last[last.index("[") :])


class InputErrorLoader(DataLoader):
    """A DataLoader whose workers' input errors arrive as `InputError`s."""

    def __iter__(self):
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except WorkerInputError as exc:
                raise InputError(exc.path, exc.reason) from None
            yield batch


def _entry(data: DataDir, image: Mapping[str, Any]) -> _Entry:
    """Build the picklable per-slice record: path, COCO id, xyxy boxes and labels."""
    anns = data.annotations.get(image["id"], [])
    xywh = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    labels = np.array([a["category_id"] for a in anns], dtype=np.int64)
    return _Entry(data.image_path(image), int(image["id"]), boxes, labels)


def collate(
    batch: Sequence[tuple[torch.Tensor, dict[str, Any]]],
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Collate detection samples into (images, targets) lists (sizes may differ)."""
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)


def make_loader(
    dataset: CTDetectionDataset,
    batch_size: int,
    workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
) -> DataLoader:
    """Build a DataLoader with `collate`, a seeded shuffle and non-persistent workers."""
    generator = torch.Generator().manual_seed(seed)
    return InputErrorLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate,
        generator=generator,
        persistent_workers=False,
    )
