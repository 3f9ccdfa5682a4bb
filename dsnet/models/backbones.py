"""Detector backbones (torchvision ResNet50-FPN, VGG16, MobileNetV3-Large-FPN) with attention.

Each backbone gets the chosen attention module at two places, the paper's "stage 1" and
"last stage":

| backbone | after the first stage | after the last stage | maps |
|---|---|---|---|
| ``resnet50`` | stem (conv1 … maxpool): 64 ch, /4 | ``layer4``: 2048 ch, /32 | FPN, 5 |
| ``vgg16`` | block 1 (conv1_x + pool): 64 ch, /2 | conv5_3 + ReLU: 512 ch, /16 | 1 |
| ``mobilenet_v3`` | ``features[0:2]``: 16 ch, /2 | ``features[16]``: 960 ch, /32 | FPN, 3 |

The attention modules are new children *inserted between* the existing ones
(``stem_attention``, ``last_attention``); no existing child is wrapped or renamed, so every
torchvision parameter keeps its name (``backbone.body.layer4.0.conv1.weight`` ...) and
pretrained checkpoints load with only the attention tensors missing.

ResNet50 and MobileNetV3 are built exactly like torchvision's ``fasterrcnn_resnet50_fpn`` and
``fasterrcnn_mobilenet_v3_large_fpn`` (same FPN, anchors and parameter names). VGG16 is the
classic single-map Faster R-CNN backbone: the conv layers up to conv5_3 (the last max-pool
dropped, stride 16), one RPN anchor set of sizes 32–512 × ratios 0.5/1/2 and a 7×7 RoIAlign
on that map.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torchvision
from torch import nn
from torchvision.models import vgg
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from dsnet.core.errors import InputError
from dsnet.models.attention import DEFAULT_ATTENTION, AttentionOptions, build_attention

BACKBONES = ("resnet50", "vgg16", "mobilenet_v3")
"""Backbone names accepted by `build_backbone` and the detector builder."""

STEM_ATTENTION = "stem_attention"
LAST_ATTENTION = "last_attention"

PRETRAINED_TRAINABLE_STAGES = 3
"""Stages left trainable by default when weights are loaded (torchvision's default)."""

FPN_CHANNELS = 256

IMAGENET_PREFIX = {"resnet50": "", "vgg16": "features.", "mobilenet_v3": "features."}
"""Prefix of the backbone's tensors in a torchvision ImageNet classification checkpoint."""


@dataclass
class Backbone:
    """A Faster R-CNN backbone and the detector settings it needs.

    Attributes:
        module: Maps images ``[B, 3, H, W]`` to one feature map or an ordered dict of maps,
            each with ``module.out_channels`` channels.
        detector_defaults: `FasterRCNN` keyword arguments this backbone needs (anchor
            generator, RoI pooler, ...); explicit caller arguments override them.

    """

    module: nn.Module
    detector_defaults: dict[str, Any] = field(default_factory=dict)


def imagenet_key_to_detector(backbone: str, key: str) -> str:
    """Name in the detector of tensor `key` of a torchvision ImageNet checkpoint.

    ``conv1.weight`` (resnet50) and ``features.0.weight`` (vgg16, mobilenet_v3) become
    ``backbone.body.conv1.weight`` and ``backbone.body.0.weight``; keys outside the feature
    extractor (``fc.*``, ``classifier.*``) come back unchanged and so fit nothing.
    """
    prefix = IMAGENET_PREFIX[backbone]
    return f"backbone.body.{key[len(prefix) :]}" if key.startswith(prefix) else key


def build_backbone(
    name: str,
    attention: str = "none",
    options: AttentionOptions = DEFAULT_ATTENTION,
    pretrained: bool = False,
    trainable_layers: int | None = None,
) -> Backbone:
    """Build backbone `name` with `attention` after its first and its last stage.

    Args:
        name: One of `BACKBONES`.
        attention: One of ``none | se | sk | ds`` (see `dsnet.models.attention`).
        options: How the attention modules are built (residual, groups, reduction).
        pretrained: Weights will be loaded into it: use `FrozenBatchNorm2d` and freeze the
            early stages, as torchvision does for pretrained detectors. Otherwise
            `BatchNorm2d` and everything trainable.
        trainable_layers: Stages (counted from the last) left trainable; ``None`` means
            3 when `pretrained`, else all (5 for resnet50 and vgg16, 6 for mobilenet_v3).
            The attention modules are always trainable.

    Returns:
        The `Backbone`.

    Raises:
        InputError: `trainable_layers` is out of range for this backbone.

    """
    norm_layer = FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    builders = {"resnet50": _resnet50_fpn, "vgg16": _vgg16, "mobilenet_v3": _mobilenet_v3_fpn}
    backbone, stages = builders[name](attention, options, norm_layer)
    trainable = trainable_layers
    if trainable is None:
        trainable = PRETRAINED_TRAINABLE_STAGES if pretrained else len(stages)
    _freeze_stages(backbone.module.body, stages, trainable)
    return backbone


def _with_attention(
    layers: Sequence[tuple[str, nn.Module]],
    stem_end: str,
    stem_channels: int,
    last_end: str,
    last_channels: int,
    attention: str,
    options: AttentionOptions,
) -> tuple[nn.Sequential, str]:
    """`layers` in order, with attention inserted after `stem_end` and after `last_end`.

    Returns:
        The sequence and the name of its last child (the last attention module, or
        `last_end` when there is no attention).

    """
    inserts = {
        stem_end: (STEM_ATTENTION, build_attention(attention, stem_channels, options)),
        last_end: (LAST_ATTENTION, build_attention(attention, last_channels, options)),
    }
    children: OrderedDict[str, nn.Module] = OrderedDict()
    for name, layer in layers:
        children[name] = layer
        if name in inserts and inserts[name][1] is not None:
            children[inserts[name][0]] = inserts[name][1]
    return nn.Sequential(children), next(reversed(children))


def _stages_between(bounds: Sequence[int]) -> list[list[str]]:
    """Child names ``str(i)`` of each stage ``bounds[k] <= i < bounds[k + 1]``."""
    return [[str(i) for i in range(a, b)] for a, b in zip(bounds, bounds[1:], strict=False)]


def _freeze_stages(body: nn.Module, stages: Sequence[Sequence[str]], trainable: int) -> None:
    """Freeze the parameters of all but the last `trainable` stages (lists of child names)."""
    if not 0 <= trainable <= len(stages):
        raise InputError(
            "trainable_layers", f"must be between 0 and {len(stages)}, got {trainable}"
        )
    for stage in stages[: len(stages) - trainable]:
        for child in stage:
            body.get_submodule(child).requires_grad_(False)


def _resnet50_fpn(
    attention: str, options: AttentionOptions, norm_layer: type[nn.Module]
) -> tuple[Backbone, list[list[str]]]:
    net = torchvision.models.resnet50(weights=None, norm_layer=norm_layer)
    layers = [(n, m) for n, m in net.named_children() if n not in ("avgpool", "fc")]
    body, last = _with_attention(layers, "maxpool", 64, "layer4", 2048, attention, options)
    fpn = BackboneWithFPN(
        body,
        {"layer1": "0", "layer2": "1", "layer3": "2", last: "3"},
        [256, 512, 1024, 2048],
        FPN_CHANNELS,
        extra_blocks=LastLevelMaxPool(),
    )
    return Backbone(fpn), [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]


def _vgg16(
    attention: str, options: AttentionOptions, norm_layer: type[nn.Module]
) -> tuple[Backbone, list[list[str]]]:
    del norm_layer  # torchvision's VGG16 has no normalisation layers
    # VGG16's feature layers (configuration "D") up to conv5_3 + ReLU, initialised as
    # torchvision's VGG does; its 120 M-parameter classifier is never built.
    features = vgg.make_layers(vgg.cfgs["D"])[:30]
    for conv in features.modules():
        if isinstance(conv, nn.Conv2d):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
    layers = list(features.named_children())
    body, _ = _with_attention(layers, "4", 64, "29", 512, attention, options)
    module = nn.Sequential(OrderedDict(body=body))
    module.out_channels = 512
    anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    pooler = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    backbone = Backbone(module, {"rpn_anchor_generator": anchors, "box_roi_pool": pooler})
    return backbone, _stages_between([0, 5, 10, 17, 24, 30])  # blocks end after each max-pool


def _mobilenet_v3_fpn(
    attention: str, options: AttentionOptions, norm_layer: type[nn.Module]
) -> tuple[Backbone, list[list[str]]]:
    features = torchvision.models.mobilenet_v3_large(weights=None, norm_layer=norm_layer).features
    # torchvision's stages: the stem, one from each strided block on, and the last 1x1 conv.
    strided = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)]
    stages = _stages_between([0, *strided, len(features) - 1, len(features)])
    first_end, last_end = int(stages[0][-1]), len(features) - 1
    body, last = _with_attention(
        list(features.named_children()),
        str(first_end),
        features[first_end].out_channels,
        str(last_end),
        features[last_end].out_channels,
        attention,
        options,
    )
    c4 = strided[-1]  # like torchvision: the first block at the last stride, and the last conv
    fpn = BackboneWithFPN(
        body,
        {str(c4): "0", last: "1"},
        [features[c4].out_channels, features[last_end].out_channels],
        FPN_CHANNELS,
        extra_blocks=LastLevelMaxPool(),
    )
    anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
    backbone = Backbone(fpn, {"rpn_anchor_generator": anchors, "rpn_score_thresh": 0.05})
    return backbone, stages
