"""Memory layout of a detector: channels-last (NHWC) weights and backbone input.

Convolutions on CUDA tensor cores (float16/bfloat16) and oneDNN on the CPU are often faster
when the feature maps are stored channels-last. torchvision's detector batches its images
into a new contiguous ``[B, 3, H, W]`` tensor inside its transform, so besides the weights
the backbone's input is converted too (a forward pre-hook), and every later feature map
follows the layout of the first convolution.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def use_channels_last(model: nn.Module) -> nn.Module:
    """Store a detector's 4-D weights channels-last and feed its backbone channels-last.

    Args:
        model: A torchvision ``GeneralizedRCNN`` (`dsnet.models.build_detector`), with a
            ``backbone`` child called on the batched images ``FloatTensor[B, 3, H, W]``.

    Returns:
        The same model, converted in place (outputs are unchanged up to rounding).

    """
    model.to(memory_format=torch.channels_last)
    model.backbone.register_forward_pre_hook(_channels_last_input)
    return model


def _channels_last_input(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
