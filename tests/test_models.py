import logging
import subprocess
import sys

import pytest
import torch
import torchvision
from torchvision.models.detection import (
    FasterRCNN,
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn,
)
from torchvision.ops import FrozenBatchNorm2d

from dsnet.bench.overhead import attention_modules, benchmark_overhead, family_models
from dsnet.core.errors import InputError
from dsnet.models import ATTENTIONS, BACKBONES, build_detector
from dsnet.models.attention import DualSelective
from dsnet.models.detector import load_weights

PAPER_CONFIGS = [
    ("resnet50", "none"),
    ("resnet50", "se"),
    ("resnet50", "sk"),
    ("resnet50", "ds"),
    ("vgg16", "none"),
    ("vgg16", "ds"),
    ("mobilenet_v3", "none"),
    ("mobilenet_v3", "ds"),
]
SMALL = {  # tiny inputs and few proposals keep a forward pass well under a second
    "min_size": 128,
    "max_size": 128,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 200,
    "rpn_post_nms_top_n_test": 100,
    "box_batch_size_per_image": 64,
    "box_score_thresh": 0.0,
}
LOSSES = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
PREDICTOR = [
    "roi_heads.box_predictor.bbox_pred.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.cls_score.weight",
]
ATTENTION_PREFIXES = ("backbone.body.stem_attention.", "backbone.body.last_attention.")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def coco_like_r50(tmp_path_factory):
    """A torchvision fasterrcnn_resnet50_fpn (91 classes) state dict saved to a file."""
    torch.manual_seed(0)
    state = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "fasterrcnn_resnet50_fpn.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize(("backbone", "attention"), PAPER_CONFIGS)
def test_every_paper_configuration_trains_and_predicts(backbone, attention):
    torch.manual_seed(0)
    model = build_detector(backbone, attention, num_classes=4, **SMALL)
    assert isinstance(model, FasterRCNN)
    assert model.transform.min_size == (128,) and model.roi_heads.score_thresh == 0.0
    images = [torch.rand(3, 128, 128), torch.rand(3, 128, 128)]
    targets = [
        {"boxes": torch.tensor([[20.0, 30.0, 70.0, 90.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[40.0, 10.0, 100.0, 60.0]]), "labels": torch.tensor([3])},
    ]
    losses = model(images, targets)
    assert set(losses) == LOSSES
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    head = model.roi_heads.box_predictor.cls_score.weight
    assert head.grad is not None and head.grad.abs().sum() > 0
    attention_params = [p for n, p in model.named_parameters() if n.startswith(ATTENTION_PREFIXES)]
    if attention == "none":
        assert attention_params == []
    else:  # residual modules start as identity: their zero-initialised scale gets a gradient
        assert sum(p.grad.abs().sum() for p in attention_params if p.grad is not None) > 0

    model.eval()
    with torch.no_grad():
        detections = model(images[:1])
    assert len(detections) == 1
    found = detections[0]
    assert set(found) == {"boxes", "labels", "scores"}
    n = found["boxes"].shape[0]
    assert found["boxes"].shape == (n, 4) and found["labels"].shape == found["scores"].shape == (n,)
    assert n > 0  # box_score_thresh 0: an untrained head still returns boxes
    assert ((found["labels"] >= 1) & (found["labels"] <= 3)).all()
    boxes = found["boxes"]
    assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
    assert boxes.min() >= 0 and boxes.max() <= 128


def test_names_exported():
    assert BACKBONES == ("resnet50", "vgg16", "mobilenet_v3")
    assert ATTENTIONS == ("none", "se", "sk", "ds")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backbone": "resnet18", "attention": "ds"}, "resnet50, vgg16, mobilenet_v3"),
        ({"backbone": "resnet50", "attention": "cbam"}, "none, se, sk, ds"),
        ({"backbone": "resnet50", "attention": "ds", "num_classes": 1}, ">= 2"),
        ({"backbone": "vgg16", "attention": "ds", "trainable_layers": 6}, "between 0 and 5"),
    ],
)
def test_invalid_arguments_are_rejected_with_the_choices(kwargs, message):
    with pytest.raises(InputError, match=message):
        build_detector(**kwargs)


def test_torchvision_detector_keys_load_with_only_attention_missing():
    torch.manual_seed(0)
    for theirs, backbone in (
        (fasterrcnn_resnet50_fpn, "resnet50"),
        (fasterrcnn_mobilenet_v3_large_fpn, "mobilenet_v3"),
    ):
        state = theirs(weights=None, weights_backbone=None, num_classes=91).state_dict()
        build_detector(backbone, "none", num_classes=91).load_state_dict(state)  # strict
        result = build_detector(backbone, "ds", num_classes=91).load_state_dict(state, strict=False)
        assert result.unexpected_keys == []
        assert result.missing_keys
        assert all(k.startswith(ATTENTION_PREFIXES) for k in result.missing_keys)
        assert {k.split(".")[2] for k in result.missing_keys} == {
            "stem_attention",
            "last_attention",
        }


def test_missing_weights_file_is_an_input_error(tmp_path):
    missing = tmp_path / "fasterrcnn_resnet50_fpn_coco.pth"
    with pytest.raises(InputError, match="never downloaded") as info:
        build_detector("resnet50", "ds", weights=missing)
    assert info.value.path == str(missing)


def test_unreadable_weights_file_is_an_input_error(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        build_detector("mobilenet_v3", "none", weights=junk)
    torch.save({"epoch": 3}, tmp_path / "no_state.pth")
    with pytest.raises(InputError, match="holds no state dict"):
        build_detector("mobilenet_v3", "none", weights=tmp_path / "no_state.pth")


def test_91_class_weights_load_into_a_4_class_model_except_the_predictor(coco_like_r50, caplog):
    path, state = coco_like_r50
    with caplog.at_level(logging.INFO, logger="dsnet.models.detector"):
        model = build_detector("resnet50", "ds", num_classes=4, weights=path)
    assert "4 skipped, other shape: roi_heads.box_predictor" in caplog.text
    own = model.state_dict()
    for key in ("backbone.body.layer3.2.conv2.weight", "rpn.head.conv.0.0.weight"):
        assert torch.equal(own[key], state[key])
    assert own["roi_heads.box_predictor.cls_score.weight"].shape == (4, 1024)

    report = load_weights(model, path, "resnet50")
    assert report.source == "detector"
    assert report.skipped == PREDICTOR
    assert report.unused == []
    assert report.missing and all(k.startswith(ATTENTION_PREFIXES) for k in report.missing)
    # FrozenBatchNorm2d (used with weights) has no num_batches_tracked buffer to load
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert counters and len(report.loaded) == len(state) - len(PREDICTOR) - len(counters)


def test_weights_freeze_early_stages_and_keep_attention_trainable(coco_like_r50):
    path, _ = coco_like_r50
    model = build_detector("resnet50", "ds", weights=path)
    body = model.backbone.body
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert not body.conv1.weight.requires_grad
    assert not any(p.requires_grad for p in body.layer1.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())
    assert all(p.requires_grad for p in body.stem_attention.parameters())
    frozen = build_detector("resnet50", "ds", weights=path, trainable_layers=0).backbone.body
    trainable = {n.split(".")[0] for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable == {"stem_attention", "last_attention"}
    scratch = build_detector("resnet50", "ds").backbone.body
    assert isinstance(scratch.bn1, torch.nn.BatchNorm2d)
    assert all(p.requires_grad for p in scratch.parameters())


def test_our_checkpoint_dict_loads(coco_like_r50, tmp_path):
    _, state = coco_like_r50
    path = tmp_path / "model.pt"
    torch.save(
        {"format": "dsnet-checkpoint/1", "model": {"backbone": "resnet50"}, "state_dict": state},
        path,
    )
    model = build_detector("resnet50", "none", num_classes=91, weights=path)
    report = load_weights(model, path, "resnet50")
    assert report.skipped == [] and report.missing == [] and report.unused == []
    assert torch.equal(
        model.state_dict()["roi_heads.box_predictor.cls_score.weight"],
        state["roi_heads.box_predictor.cls_score.weight"],
    )


def test_weights_of_another_backbone_are_rejected(coco_like_r50):
    path, _ = coco_like_r50
    with pytest.raises(InputError, match="none of its tensors fits the mobilenet_v3 backbone"):
        build_detector("mobilenet_v3", "ds", weights=path)


@pytest.mark.parametrize(
    ("backbone", "classifier", "head"),
    [
        (
            "resnet50",
            lambda: torchvision.models.resnet50(weights=None),
            ["fc.bias", "fc.weight"],
        ),
        (
            "mobilenet_v3",
            lambda: torchvision.models.mobilenet_v3_large(weights=None),
            [
                "classifier.0.bias",
                "classifier.0.weight",
                "classifier.3.bias",
                "classifier.3.weight",
            ],
        ),
        pytest.param(
            "vgg16",
            lambda: torchvision.models.vgg16(weights=None),
            [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("bias", "weight")],
            marks=pytest.mark.slow,  # 138 M parameters to initialise and save
        ),
    ],
)
def test_imagenet_backbone_weights_fill_the_backbone_body(backbone, classifier, head, tmp_path):
    torch.manual_seed(0)
    state = classifier().state_dict()
    path = tmp_path / f"{backbone}-imagenet.pth"
    torch.save(state, path)
    model = build_detector(backbone, "ds", weights=path)
    report = load_weights(model, path, backbone)
    assert report.source == "ImageNet backbone"
    # torchvision's resnet50 keeps its classifier at the top level: fc.* -> backbone.body.fc.*
    expected_unused = [f"backbone.body.{k}" if backbone == "resnet50" else k for k in head]
    assert sorted(report.unused) == sorted(expected_unused)
    body_missing = [k for k in report.missing if k.startswith("backbone.body.")]
    assert body_missing and all(k.startswith(ATTENTION_PREFIXES) for k in body_missing)
    first_conv = next(k for k in state if k.endswith("weight") and state[k].ndim == 4)
    suffix = first_conv.removeprefix("features.")
    torch.testing.assert_close(model.state_dict()[f"backbone.body.{suffix}"], state[first_conv])


def test_bench_variants_share_weights_and_predictions():
    torch.manual_seed(0)
    plain, ds = family_models("mobilenet_v3", ("none", "ds"), 128, torch.device("cpu"))
    assert attention_modules(plain) == []
    assert [type(m) for m in attention_modules(ds)] == [DualSelective, DualSelective]
    image = [torch.rand(3, 128, 128)]
    with torch.inference_mode():
        a, b = plain(image)[0], ds(image)[0]
    assert a["boxes"].shape[0] > 0
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


def test_benchmark_overhead_reports_ratios_to_the_plain_backbone():
    torch.set_num_threads(2)  # the one_torch_thread fixture restores the original setting
    result = benchmark_overhead(
        size=64, repeats=2, warmup=1, threads=1, device="cpu", backbones=["mobilenet_v3"]
    )
    assert torch.get_num_threads() == 2  # restored after timing with 1 thread
    assert (result.device, result.threads, result.size, result.repeats) == ("cpu", 1, 64, 2)
    assert [(r.backbone, r.attention) for r in result.rows] == [
        ("mobilenet_v3", "none"),
        ("mobilenet_v3", "ds"),
    ]
    plain, ds = result.rows
    assert plain.ratio == plain.cpu_ratio == 1.0
    assert plain.attention_cpu_ms == plain.attention_share == 0.0
    assert all(r.median_ms > 0 and r.cpu_ms > 0 for r in result.rows)
    assert ds.ratio == pytest.approx(ds.median_ms / plain.median_ms)
    assert ds.cpu_ratio == pytest.approx(ds.cpu_ms / plain.cpu_ms)
    assert 0 < ds.attention_cpu_ms < ds.cpu_ms
    assert ds.attention_share == pytest.approx(ds.attention_cpu_ms / plain.cpu_ms)


def test_bench_overhead_cli():
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "dsnet",
            "bench",
            "overhead",
            "--size",
            "64",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--backbone",
            "mobilenet_v3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "mobilenet_v3" in ok.stdout and "1.000" in ok.stdout and "cpu" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "dsnet", "bench", "overhead", "--backbone", "resnet18"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "resnet18" in bad.stderr and "resnet50, vgg16, mobilenet_v3" in bad.stderr
    assert "Traceback" not in bad.stderr
