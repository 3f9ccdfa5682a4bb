"""Data-loader throughput: images per second through a DataLoader, per worker count.

Each measurement is one full pass (one training epoch) over every slice of the data dir,
with the training augmentations, in shuffled order, timed from creating the iterator
(worker start-up included, as it is paid each epoch with non-persistent workers) to the
last batch. Target: loader images/s >= 5 x training images/s.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dsnet.core.config import section
from dsnet.core.errors import InputError
from dsnet.data.contract import DataDir
from dsnet.data.dataset import CTDetectionDataset, make_loader


@dataclass(frozen=True)
class LoaderSpeed:
    """Throughput of one configuration.

    Attributes:
        workers: DataLoader worker processes (0 = in the main process).
        batch_size: Images per batch.
        images: Images loaded.
        seconds: Wall time of the pass.
    """

    workers: int
    batch_size: int
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        """Images loaded per second."""
        return self.images / self.seconds if self.seconds > 0 else float("inf")


def bench_loader(
    data: DataDir,
    params: Mapping[str, Any],
    workers: Iterable[int],
    batch_size: int | None = None,
) -> list[LoaderSpeed]:
    """Time one epoch of the training loader for each worker count.

    Args:
        data: The data dir (all patients are loaded).
        params: Parameters (``preprocess``, ``train.augment``, ``train.batch_size``).
        workers: Worker counts to measure.
        batch_size: Images per batch; default params ``train.batch_size``.

    Returns:
        One `LoaderSpeed` per worker count, in order.

    Raises:
        InputError: On a negative worker count or a batch size below 1.
    """
    train = section(params, "train")
    batch_size = int(batch_size or train.get("batch_size", 4))
    if batch_size < 1:
        raise InputError("--batch-size", f"{batch_size} must be at least 1")
    dataset = CTDetectionDataset(
        data, data.patients(), section(params, "preprocess"), train.get("augment")
    )
    results = []
    for count in workers:
        if count < 0:
            raise InputError("--workers", f"{count} must be >= 0")
        loader = make_loader(dataset, batch_size, workers=count, shuffle=True)
        start = time.perf_counter()
        images = sum(len(batch_images) for batch_images, _ in loader)
        results.append(LoaderSpeed(count, batch_size, images, time.perf_counter() - start))
    return results
