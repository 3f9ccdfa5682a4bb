"""Detection dataset: item shapes and ranges, boxes on the vertebral body, augmentations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datadir_factory import make_data_dir

from dsnet.core.errors import InputError
from dsnet.data import augment as aug
from dsnet.data.contract import load_data_dir
from dsnet.data.dataset import CTDetectionDataset, collate, make_loader

torch.set_num_threads(1)

PREPROCESS = {"spacing_mm": 1.5, "canvas_px": 64, "windows": [[-200, 1200], [0, 400], [-160, 240]]}
T_SCORES = {"P1": {"L1": 0.3, "L2": -1.6}, "P2": {"L1": -2.7, "L3": -2.0}}
BONE = 0.2  # trabecular window (0..400 HU): > 80 HU is bone in the phantom (tissue 40)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_data_dir(tmp_path_factory.mktemp("ds") / "d", T_SCORES, slices_per_vertebra=2)
    return load_data_dir(root)


def box_fit(image: torch.Tensor, box: torch.Tensor) -> tuple[float, float]:
    """(bone share of the box's pixels, share of all bone pixels lying outside the box)."""
    bone = image[1] > BONE
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    inside = torch.zeros_like(bone)
    inside[y1:y2, x1:x2] = True
    return float(bone[inside].float().mean()), float((bone & ~inside).sum() / bone.sum())


def test_items_have_model_shapes_ranges_and_targets(data):
    ds = CTDetectionDataset(data, ["P1", "P2"], PREPROCESS)
    assert len(ds) == 8
    image, target = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64)  # the 64 px canvas
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert float(image.max()) == 1.0 and float(image.min()) == 0.0  # cortex and air saturate
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (1, 4)
    assert target["labels"].dtype == torch.int64
    assert target["image_id"] == data.images[0]["id"]
    assert target["placement"].scale == pytest.approx((1.5, 1.5))  # 96 px at 1 mm -> 1.5 mm
    assert target["placement"].offset == (0, 0)  # 64 px fill the canvas
    labels = [int(ds[i][1]["labels"][0]) for i in range(len(ds))]
    assert labels == [1, 1, 2, 2, 3, 3, 2, 2]


def test_boxes_map_to_the_bright_vertebral_body_and_back(data):
    ds = CTDetectionDataset(data, data.patients(), PREPROCESS)
    for index in range(len(ds)):
        image, target = ds[index]
        box = target["boxes"][0]
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        mask = torch.zeros(image.shape[1:], dtype=torch.bool)
        mask[y1:y2, x1:x2] = True
        assert image[1][mask].mean() > 3 * image[1][~mask].mean()
        share_inside, bone_outside = box_fit(image, box)
        assert share_inside > 0.6 and bone_outside < 0.1, (index, share_inside, bone_outside)
        ann = data.annotations[target["image_id"]][0]
        x, y, w, h = ann["bbox"]
        back = target["placement"].canvas_to_stored(target["boxes"].numpy())
        np.testing.assert_allclose(back[0], [x, y, x + w, y + h], rtol=1e-5)


@pytest.mark.parametrize("zoom", [0.9, 1.15])
def test_mirror_and_zoom_keep_boxes_on_the_anatomy(data, zoom):
    plain = CTDetectionDataset(data, data.patients(), PREPROCESS)
    moved = CTDetectionDataset(
        data, data.patients(), PREPROCESS, augment={"hflip": 1.0, "scale": [zoom, zoom]}
    )
    for index in range(len(plain)):
        image, target = moved[index]
        assert image.shape == plain[index][0].shape  # zoom keeps the canvas
        share_inside, bone_outside = box_fit(image, target["boxes"][0])
        assert share_inside > 0.6 and bone_outside < 0.1, (index, share_inside, bone_outside)
        before = plain[index][1]["boxes"][0]
        centre_before = float(before[0] + before[2]) / 2 - 32
        centre_after = float(target["boxes"][0][0] + target["boxes"][0][2]) / 2 - 32
        assert centre_after == pytest.approx(-centre_before * zoom, abs=1.0)  # mirrored, scaled
        width_ratio = float(target["boxes"][0][2] - target["boxes"][0][0]) / float(
            before[2] - before[0]
        )
        assert width_ratio == pytest.approx(zoom, rel=0.05)


def test_intensity_offset_shifts_hu_before_windowing(data):
    config = {"intensity_jitter_hu": 100}
    ds = CTDetectionDataset(data, data.patients(), PREPROCESS, augment=config, seed=5)
    plain = CTDetectionDataset(data, data.patients(), PREPROCESS)
    offsets = []
    for index in range(4):
        expected = aug.draw(
            aug.AugmentConfig.from_params(config), np.random.default_rng((5, 0, index))
        ).hu_offset
        full_window = ds[index][0][0] - plain[index][0][0]  # channel 0: -200..1200 HU
        tissue = (plain[index][0][0] > 0.1) & (plain[index][0][0] < 0.3)
        measured = full_window[tissue] * 1400.0
        assert float(measured.mean()) == pytest.approx(expected, abs=0.5)
        assert float(measured.std()) < 0.5
        offsets.append(expected)
    assert all(abs(o) <= 100 for o in offsets) and len(set(offsets)) == 4


def test_augmentation_is_deterministic_per_seed_and_epoch(data):
    config = {"hflip": 0.5, "intensity_jitter_hu": 15, "scale": [0.9, 1.1]}

    def items(seed, epoch):
        ds = CTDetectionDataset(data, data.patients(), PREPROCESS, augment=config, seed=seed)
        ds.set_epoch(epoch)
        return [ds[i] for i in range(len(ds))]

    first, again, other_epoch = items(1, 0), items(1, 0), items(1, 1)
    for (a, ta), (b, tb) in zip(first, again, strict=True):
        assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])
    assert any(
        not torch.equal(a["boxes"], b["boxes"])
        for (_, a), (_, b) in zip(first, other_epoch, strict=True)
    )


def test_loader_batches_are_the_same_with_and_without_workers(data):
    ds = CTDetectionDataset(data, data.patients(), PREPROCESS, augment={"hflip": 0.5}, seed=2)
    serial = list(make_loader(ds, batch_size=3, workers=0, shuffle=True, seed=9))
    parallel = list(make_loader(ds, batch_size=3, workers=2, shuffle=True, seed=9))
    assert [len(images) for images, _ in serial] == [3, 3, 2]
    for (images_a, targets_a), (images_b, targets_b) in zip(serial, parallel, strict=True):
        assert [t["image_id"] for t in targets_a] == [t["image_id"] for t in targets_b]
        assert all(torch.equal(a, b) for a, b in zip(images_a, images_b, strict=True))


def test_collate_keeps_lists():
    images, targets = collate([(torch.zeros(3, 4, 5), {"a": 1}), (torch.ones(3, 6, 5), {"a": 2})])
    assert [i.shape[1] for i in images] == [4, 6] and [t["a"] for t in targets] == [1, 2]


def test_image_without_annotations_has_empty_targets(data):
    image_id = data.images[0]["id"]
    kept, data.annotations[image_id] = data.annotations[image_id], []
    try:
        _, target = CTDetectionDataset(data, ["P1"], PREPROCESS)[0]
    finally:
        data.annotations[image_id] = kept
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


@pytest.mark.parametrize(
    ("preprocess", "augment", "key"),
    [
        ({"spacing_mm": 0, "windows": [[0, 1]]}, None, "preprocess.spacing_mm"),
        ({"spacing_mm": 1.5, "canvas_px": 64, "windows": [[400, 0]]}, None, "preprocess.windows"),
        ({"spacing_mm": 1.5, "canvas_px": 100, "windows": [[0, 1]]}, None, "canvas_px.*32"),
        (PREPROCESS, {"vflip": 0.5}, "unknown key"),
        (PREPROCESS, {"hflip": 1.5}, "not a probability"),
        (PREPROCESS, {"scale": [1.2, 0.8]}, "0 < low <= high"),
    ],
)
def test_bad_params_are_input_errors(data, preprocess, augment, key):
    with pytest.raises(InputError, match=key):
        CTDetectionDataset(data, ["P1"], preprocess, augment)


def test_bench_loader_counts_every_image_per_worker_setting(data, params):
    from dsnet.bench.loader import bench_loader

    speeds = bench_loader(data, params, workers=[0, 1], batch_size=3)
    assert [(s.workers, s.batch_size, s.images) for s in speeds] == [(0, 3, 8), (1, 3, 8)]
    assert all(s.seconds > 0 and s.images_per_s == s.images / s.seconds for s in speeds)
    with pytest.raises(InputError, match="--workers"):
        bench_loader(data, params, workers=[-1])


def test_synthetic_boxes_sit_on_the_vertebral_body(tmp_path, params):
    from dsnet.synth.generate import synthesize

    synthesize(tmp_path / "syn", patients=1, seed=3, slices_per_vertebra=1)
    data = load_data_dir(tmp_path / "syn")
    ds = CTDetectionDataset(data, data.patients(), params["preprocess"])
    for index in range(len(ds)):
        image, target = ds[index]
        x1, y1, x2, y2 = (int(round(float(v))) for v in target["boxes"][0])
        inside = image[0, y1:y2, x1:x2].mean()  # full bone window
        shifted = image[0, y1:y2, max(0, x1 - (x2 - x1)) : x1].mean()  # same size, to the side
        assert inside > image[0].mean() and inside > shifted, (index, inside, shifted)
