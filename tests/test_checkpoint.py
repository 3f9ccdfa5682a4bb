"""dsnet.models.checkpoint: model.pt round trip and refusal of bad files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from dsnet.core.errors import InputError
from dsnet.models.checkpoint import (
    CHECKPOINT_FORMAT,
    FEATURE_MAPS,
    build_model,
    load_checkpoint,
    model_config,
    read_checkpoint,
    save_checkpoint,
)

torch.set_num_threads(1)

MODEL = {
    "backbone": "resnet50",
    "attention": "ds",
    "attention_residual": True,
    "detector": {"box_score_thresh": 0.0, "box_detections_per_img": 5},
}
PREPROCESS = {"spacing_mm": 1.5, "canvas_px": 64, "windows": [[-200, 1200], [0, 400], [-160, 240]]}


def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every float tensor, so a round trip cannot pass by re-initialising."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.01 * torch.randn(tensor.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    cfg = model_config(MODEL, num_classes=4, canvas_px=64)
    model = _trained_like(build_model(cfg)).eval()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    meta = {"epochs": 3, "seed": 0, "device": "cpu", "train_seconds": 1.5}
    save_checkpoint(path, model, cfg, PREPROCESS, meta)
    return path, model, cfg


def test_round_trip_restores_identical_weights_and_predictions(saved):
    path, model, cfg = saved
    loaded, checkpoint = load_checkpoint(path, "cpu")
    assert not loaded.training
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key, tensor in original.items():
        assert torch.equal(tensor, restored[key]), key

    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, got = model([image])[0], loaded([image])[0]
    assert expected["boxes"].shape[0] > 0  # score threshold 0: there is something to compare
    for key in ("boxes", "labels", "scores"):
        assert torch.equal(expected[key], got[key]), key

    assert checkpoint["format"] == CHECKPOINT_FORMAT
    assert checkpoint["model"] == cfg
    assert checkpoint["preprocess"] == PREPROCESS
    assert [c["name"] for c in checkpoint["categories"]] == [
        "normal",
        "osteopenia",
        "osteoporosis",
    ]
    assert checkpoint["meta"]["epochs"] == 3


def test_file_is_a_plain_weights_only_dict(saved):
    path, _, _ = saved
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"format", "model", "preprocess", "categories", "state_dict", "meta"}
    assert all(t.device.type == "cpu" for t in raw["state_dict"].values())


def test_model_config_keeps_architecture_only():
    cfg = model_config({**MODEL, "weights": "/some/coco.pth"}, num_classes=4, canvas_px=64)
    assert "weights" not in cfg
    assert cfg["num_classes"] == 4
    with pytest.raises(InputError, match="missing key.*backbone"):
        model_config({"attention": "ds"}, num_classes=4, canvas_px=64)
    assert cfg["min_size"] == cfg["max_size"] == 64  # the detector never resizes the canvas
    with pytest.raises(InputError, match="model.min_size.*canvas_px"):
        model_config({**MODEL, "min_size": 64}, num_classes=4, canvas_px=64)


def test_attention_groups_and_reduction_come_from_params_and_the_checkpoint(tmp_path):
    dense = {"backbone": "vgg16", "attention_groups": 1, "attention_reduction": 4}
    cfg = model_config({**MODEL, **dense}, num_classes=4, canvas_px=64)
    assert (cfg["attention_groups"], cfg["attention_reduction"]) == (1, 4)
    path = save_checkpoint(tmp_path / "model.pt", build_model(cfg), cfg, PREPROCESS, {})
    loaded, checkpoint = load_checkpoint(path)
    assert checkpoint["model"]["attention_groups"] == 1
    last = loaded.backbone.body.last_attention  # after VGG16's last conv: C = 512
    assert last.branch5[0].groups == last.fuse[0].groups == 1  # the paper's dense DS
    assert last.branch5[0].weight.shape == (512, 512, 5, 5)
    assert last.gate3.fc1.out_channels == 512 // 4
    default = model_config(MODEL, num_classes=4, canvas_px=64)
    assert (default["attention_groups"], default["attention_reduction"]) == (128, 16)


def test_checkpoint_with_the_old_residual_key_loads_with_its_meaning(saved, tmp_path):
    path, model, _ = saved
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    old = {k: v for k, v in checkpoint["model"].items() if not k.startswith("attention_")}
    old["attention"], old["ds_residual"] = "ds", True  # written before the rename
    old_path = tmp_path / "old.pt"
    torch.save({**checkpoint, "model": old}, old_path)
    loaded, read = load_checkpoint(old_path)
    assert read["model"]["attention_residual"] is True and "ds_residual" not in read["model"]
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key]), key


def test_anchor_sizes_reach_the_rpn_of_every_backbone():
    sizes = [16, 32, 64, 128, 256]
    model = build_model(model_config({**MODEL, "anchor_sizes": sizes}, num_classes=4, canvas_px=64))
    assert model.rpn.anchor_generator.sizes == ((16,), (32,), (64,), (128,), (256,))
    assert model.rpn.head.cls_logits.out_channels == 3  # three aspect ratios per position
    default = build_model(model_config(MODEL, num_classes=4, canvas_px=64))
    assert default.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))
    for backbone, maps in (("mobilenet_v3", 3), ("vgg16", 1)):
        other = build_model(
            model_config({**MODEL, "backbone": backbone, "anchor_sizes": sizes}, 4, 64)
        ).eval()
        assert other.rpn.anchor_generator.sizes == (tuple(sizes),) * maps
        assert other.rpn.head.cls_logits.out_channels == 15
        with torch.no_grad():  # every map has anchors: a forward pass works
            other([torch.rand(3, 64, 64)])


@pytest.mark.parametrize("backbone", ["resnet50", "mobilenet_v3", "vgg16"])
def test_feature_map_table_matches_the_backbones(backbone):
    model = build_model(
        model_config({**MODEL, "backbone": backbone}, num_classes=4, canvas_px=64)
    ).eval()
    with torch.no_grad():
        maps = model.backbone(torch.zeros(1, 3, 64, 64))
    assert (len(maps) if isinstance(maps, dict) else 1) == FEATURE_MAPS[backbone]


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_garbage_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(InputError, match="not a readable checkpoint"):
        read_checkpoint(path)


def test_arbitrary_pickle_is_refused_not_executed(tmp_path):
    marker = tmp_path / "executed"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "model.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "payload": Exploit()}, path)
    with pytest.raises(InputError, match="not a readable checkpoint"):
        read_checkpoint(path)
    assert not marker.exists()


def test_other_format_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"format": "something/9", "state_dict": {}}, path)
    with pytest.raises(InputError, match="'something/9' is not dsnet-checkpoint/1"):
        read_checkpoint(path)
    torch.save({"backbone.x": torch.zeros(1)}, path)  # a bare state dict
    with pytest.raises(InputError, match="None is not dsnet-checkpoint/1"):
        read_checkpoint(path)


def test_weights_that_do_not_fit_the_config(saved, tmp_path):
    path, _, _ = saved
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["model"]["attention"] = "none"  # DS tensors now have no place
    other = tmp_path / "model.pt"
    torch.save(checkpoint, other)
    with pytest.raises(InputError, match=r"do not fit its model config: \d+ unexpected"):
        load_checkpoint(other)


def test_failed_save_keeps_the_previous_file(saved, tmp_path):
    path, model, cfg = saved
    target = tmp_path / "model.pt"
    target.write_bytes(path.read_bytes())
    before = target.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError)):  # a lambda cannot be saved
        save_checkpoint(target, model, cfg, PREPROCESS, {"bad": lambda: None})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left


def test_model_trained_from_pretrained_weights_round_trips(saved, tmp_path):
    """Frozen BatchNorm (weights-initialised) reloads into the plain-BatchNorm rebuild."""
    from torchvision.ops import FrozenBatchNorm2d

    path, _, cfg = saved
    init = tmp_path / "init.pth"
    torch.save(torch.load(path, weights_only=True)["state_dict"], init)
    model = build_model(cfg, weights=init).eval()
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    target = tmp_path / "model.pt"
    save_checkpoint(target, model, cfg, PREPROCESS, {})
    loaded, _ = load_checkpoint(target)
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected, got = model([image])[0], loaded([image])[0]
    assert expected["scores"].numel() > 0
    # Same maths, different float rounding order (FrozenBatchNorm2d folds its scale).
    torch.testing.assert_close(got["scores"], expected["scores"], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(got["boxes"], expected["boxes"], atol=0.01, rtol=0)  # pixels
