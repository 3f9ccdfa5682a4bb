"""Channel-attention modules inserted into detector backbones: DS, SE and SK.

All three map a feature map ``x`` of shape ``[B, C, H, W]`` to a tensor of the same shape
and share one residual convention, so the backbones insert them the same way:

* ``residual=True`` (default): ``output = x + f(x)``, and the last scale on ``f`` starts
  at zero, so a freshly inserted module is exactly the identity. A pretrained backbone
  therefore behaves as before at the first step; the module's gradients start flowing after
  the first update of that scale (the ``γ`` of the zero-initialised norm layer or layer scale).
* ``residual=False``: ``output = f(x)`` (the module replaces the features).

Cost: DS and SK use grouped convolutions, ``groups=128`` reduced to ``gcd(C, groups)``:
16 channels per group on ResNet50's 2048-channel last stage, depthwise on maps of 64 channels
or fewer. A k×k convolution then costs ``C * (C / groups) * k²`` multiply-adds per pixel
instead of ``C² k²``. Measured overheads on the whole detector are in ``docs/model.md``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import SqueezeExcitation

ATTENTIONS = ("none", "se", "sk", "ds")
"""Attention names accepted by `build_attention` and the detector builder."""

DEFAULT_GROUPS = 128
DEFAULT_REDUCTION = 16


@dataclass(frozen=True)
class AttentionOptions:
    """How a backbone's attention modules are built (the ``model.attention_*`` params).

    Attributes:
        residual: ``output = x + f(x)`` (identity at initialisation) instead of ``f(x)``;
            DS, SE and SK alike.
        groups: Groups of DS's and SK's spatial convolutions, reduced to ``gcd(C, groups)``;
            1 is the dense form (SE has no convolutions and ignores it).
        reduction: Bottleneck ratio of the gates' FC layers (all three modules).

    """

    residual: bool = True
    groups: int = DEFAULT_GROUPS
    reduction: int = DEFAULT_REDUCTION


DEFAULT_ATTENTION = AttentionOptions()
"""Residual, 128 groups, reduction 16: what ``params.yaml`` sets."""


def cpu_float32(forward: Callable[[nn.Module, Tensor], Tensor]) -> Callable:
    """Run an attention module's `forward` in float32 when CPU bfloat16 autocast is on.

    Under CPU bfloat16 autocast on a CPU with AMX (``train.cpu_bf16``), the weight gradient
    of the stem DS module's depthwise 3×3 convolution came out as 1e26-1e31 in some steps
    while the gradients flowing into it were about 1e-8 (a float32 rerun of the same step
    gives about 1e-5); training then diverged within 20 steps, at a different step each run.
    The modules are about 2 % of the detector's compute, so they run in float32 there; the
    rest of the network keeps bfloat16. CUDA autocast (float16 AMP) is left as it is.
    """

    @functools.wraps(forward)
    def float32_forward(self: nn.Module, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
            return forward(self, x)
        with torch.autocast("cpu", enabled=False):
            return forward(self, x.float())

    return float32_forward


def squeeze_channels(channels: int, reduction: int, minimum: int = 8) -> int:
    """Width of the bottleneck of an attention MLP: ``max(channels // reduction, minimum)``."""
    return max(channels // reduction, minimum)


def grouped_conv(
    channels: int, kernel_size: int, groups: int, dilation: int = 1, relu: bool = True
) -> nn.Sequential:
    """Build a ``C -> C`` grouped convolution with "same" padding, BatchNorm and (opt.) ReLU.

    Args:
        channels: Input and output channels ``C``.
        kernel_size: Odd kernel size ``k``.
        groups: Convolution groups; reduced to ``gcd(C, groups)`` so any ``C`` works.
        dilation: Kernel dilation; the padding ``dilation * (k - 1) / 2`` keeps ``H, W``.
        relu: End with a ReLU (otherwise convolution and BatchNorm only).

    Returns:
        Module mapping ``[B, C, H, W] -> [B, C, H, W]``.

    """
    conv = nn.Conv2d(
        channels,
        channels,
        kernel_size,
        padding=dilation * (kernel_size - 1) // 2,
        dilation=dilation,
        groups=math.gcd(channels, groups),
        bias=False,
    )
    layers = [conv, nn.BatchNorm2d(channels)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class DualSelective(nn.Module):
    """Dual-selective (DS) channel attention of DSNet (Xue et al., 2022).

    Two branches see the input through a 3×3 and a 5×5 convolution (BN + ReLU each); each
    branch is re-weighted per channel by its own squeeze-and-excitation gate
    (global average pool → FC ``C → C/reduction`` → ReLU → FC → sigmoid); the two
    re-weighted branches are summed and fused by a 3×3 convolution with dilation 2
    (padding 2) and BatchNorm. With ``residual=True`` the output is ``x + fused`` and the
    fuse BatchNorm's ``γ`` starts at zero, so the module starts as the identity.

    Cost: the three spatial convolutions (3×3, 5×5 and dilated 3×3: 9 + 25 + 9 = 43 taps) are
    grouped, ``groups`` (default 128) reduced to ``gcd(C, groups)``: ``43 * C * C / groups``
    multiply-adds per pixel instead of ``43 * C²`` for dense ones. On ResNet50's last stage
    (``C = 2048``, stride 32) that is 1.4 M instead of 180 M per pixel (a dense prototype made
    the whole detector 1.64× slower); after the stem (``C = 64``, stride 4, depthwise) it is
    2.8 k. SKNet's 32 groups cost 4–5 % of the detector's CPU time at 256×256 (64-channel groups
    on the last stage, and 2-channel groups after the stem, which CPU kernels run slowly);
    128 groups keep both modules of the R50 detector under 2 % of its CPU time at 256×256
    and 512×512 (``docs/model.md``, ``dsnet bench overhead``).

    Args:
        channels: Channels ``C`` of the feature map.
        reduction: Bottleneck ratio of the gates' FC layers (``max(C // reduction, 8)`` wide).
        groups: Groups of the 3×3, 5×5 and fuse convolutions.
        residual: Return ``x + fused`` (identity at initialisation) instead of ``fused``.

    Shape:
        ``[B, C, H, W] -> [B, C, H, W]``.

    """

    def __init__(
        self,
        channels: int,
        reduction: int = DEFAULT_REDUCTION,
        groups: int = DEFAULT_GROUPS,
        residual: bool = True,
    ) -> None:
        super().__init__()
        squeeze = squeeze_channels(channels, reduction)
        self.residual = residual
        self.branch3 = grouped_conv(channels, 3, groups)
        self.branch5 = grouped_conv(channels, 5, groups)
        self.gate3 = SqueezeExcitation(channels, squeeze)
        self.gate5 = SqueezeExcitation(channels, squeeze)
        self.fuse = grouped_conv(channels, 3, groups, dilation=2, relu=False)
        if residual:
            nn.init.zeros_(self.fuse[1].weight)

    @cpu_float32
    def forward(self, x: Tensor) -> Tensor:
        """Re-weight both branches per channel, sum, fuse; add ``x`` when residual."""
        selected = self.gate3(self.branch3(x)) + self.gate5(self.branch5(x))
        fused = self.fuse(selected)
        return x + fused if self.residual else fused


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., 2018), torchvision's `SqueezeExcitation`.

    ``f(x) = x * sigmoid(FC(ReLU(FC(GAP(x)))))`` with a ``max(C // reduction, 8)`` wide
    bottleneck. With ``residual=True`` the output is ``x + γ * f(x)`` with a per-channel
    layer scale ``γ`` initialised to zero (identity at initialisation, like `DualSelective`).

    Args:
        channels: Channels ``C`` of the feature map.
        reduction: Bottleneck ratio of the FC layers.
        residual: Return ``x + γ * f(x)`` instead of ``f(x)``.

    Shape:
        ``[B, C, H, W] -> [B, C, H, W]``.

    """

    def __init__(
        self, channels: int, reduction: int = DEFAULT_REDUCTION, residual: bool = True
    ) -> None:
        super().__init__()
        self.residual = residual
        self.excite = SqueezeExcitation(channels, squeeze_channels(channels, reduction))
        if residual:
            self.layer_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))

    @cpu_float32
    def forward(self, x: Tensor) -> Tensor:
        """Scale the channels of ``x``; add ``x`` when residual."""
        excited = self.excite(x)
        return x + self.layer_scale * excited if self.residual else excited


class SelectiveKernel(nn.Module):
    """Selective kernel (SK) convolution of SKNet (Li et al., CVPR 2019), two branches.

    Split: a 3×3 and a dilated 3×3 (dilation 2, the paper's stand-in for 5×5) grouped
    convolution with BN + ReLU, ``U1`` and ``U2``. Fuse: ``s = GAP(U1 + U2)``,
    ``z = ReLU(FC(s))`` with ``max(C // reduction, 32)`` channels (``L = 32`` as in the
    paper). Select: per-channel softmax across the branches of ``FC_i(z)`` → ``a_i``;
    ``V = a1 * U1 + a2 * U2``. The paper's BatchNorm after the first FC is left out because
    it cannot normalise a ``1×1`` map at training batch size 1. With ``residual=True`` the
    output is ``x + γ * V`` with a per-channel layer scale ``γ`` initialised to zero.

    Args:
        channels: Channels ``C`` of the feature map.
        reduction: Bottleneck ratio ``r`` of the fuse FC.
        groups: Groups ``G`` of the branch convolutions (reduced to ``gcd(C, groups)``); SKNet
            uses 32 inside its bottleneck, 128 keeps the cost on wide maps like DS's.
        residual: Return ``x + γ * V`` instead of ``V``.

    Shape:
        ``[B, C, H, W] -> [B, C, H, W]``.

    """

    def __init__(
        self,
        channels: int,
        reduction: int = DEFAULT_REDUCTION,
        groups: int = DEFAULT_GROUPS,
        residual: bool = True,
    ) -> None:
        super().__init__()
        squeeze = squeeze_channels(channels, reduction, minimum=32)
        self.residual = residual
        self.branches = nn.ModuleList(
            [grouped_conv(channels, 3, groups), grouped_conv(channels, 3, groups, dilation=2)]
        )
        self.squeeze = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, squeeze, 1), nn.ReLU(inplace=True)
        )
        self.select = nn.Conv2d(squeeze, channels * len(self.branches), 1)
        if residual:
            self.layer_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))

    @cpu_float32
    def forward(self, x: Tensor) -> Tensor:
        """Weigh the branches per channel by a softmax across them; add ``x`` when residual."""
        branches = torch.stack([branch(x) for branch in self.branches], dim=1)  # [B, M, C, H, W]
        logits = self.select(self.squeeze(branches.sum(dim=1)))  # [B, M * C, 1, 1]
        weights = logits.view(x.shape[0], len(self.branches), x.shape[1], 1, 1).softmax(dim=1)
        selected = (branches * weights).sum(dim=1)
        return x + self.layer_scale * selected if self.residual else selected


def build_attention(
    name: str, channels: int, options: AttentionOptions = DEFAULT_ATTENTION
) -> nn.Module | None:
    """Build the attention module called `name` for a ``C = channels`` feature map.

    Args:
        name: One of `ATTENTIONS`; ``"none"`` gives ``None`` (nothing is inserted).
        channels: Channels of the feature map the module will see.
        options: Residual convention, groups and reduction (see `AttentionOptions`).

    Returns:
        A module mapping ``[B, C, H, W] -> [B, C, H, W]``, or ``None`` for ``"none"``.

    Raises:
        ValueError: `name` is not one of `ATTENTIONS`.

    """
    if name == "none":
        return None
    if name == "ds":
        return DualSelective(channels, options.reduction, options.groups, options.residual)
    if name == "se":
        return SqueezeExcite(channels, options.reduction, options.residual)
    if name == "sk":
        return SelectiveKernel(channels, options.reduction, options.groups, options.residual)
    raise ValueError(f"unknown attention {name!r}; choose one of {', '.join(ATTENTIONS)}")
