"""The benchmark's models and inputs: R50 and R50+DS sharing one initialisation, synthetic slices.

No pretrained weights are at hand, so the shared initialisation is made here: a plain R50
detector with random weights whose BatchNorm statistics are taken from one batch of the
synthetic images. With a pretrained profile that state is saved to a file and every model is
built from it through the same path as training from a COCO checkpoint (frozen BatchNorm,
frozen early stages); otherwise it is loaded into the from-scratch model. Either way the
activations are well scaled (no float16 overflow) and, DS starting as the identity, both
models propose the same boxes at the first step, so the DS/plain ratio measures DS alone.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn

from dsnet.bench.gpu.profile import BenchProfile
from dsnet.models.checkpoint import build_model, model_config
from dsnet.models.layout import use_channels_last

NUM_CLASSES = 4
MODELS = {"R50": "none", "R50+DS": "ds"}
"""Benchmark model name -> attention of the ResNet50 detector."""


def synthetic_batch(
    batch_size: int, size: int, device: torch.device, seed: int = 0
) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Random images and one vertebral-body-sized box per image, on `device`.

    Args:
        batch_size: Images ``B``.
        size: Image side ``S``.
        device: Where the tensors go.
        seed: Seed of the images, boxes and labels.

    Returns:
        ``(images, targets)``: ``B`` FloatTensor[3, S, S] in [0, 1]; per image ``boxes``
        FloatTensor[1, 4] (x1, y1, x2, y2, a square of side 0.15-0.3 S around the centre
        region) and ``labels`` Int64Tensor[1] in 1..3.

    """
    generator = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch_size):
        images.append(torch.rand(3, size, size, generator=generator).to(device))
        side = size * (0.15 + 0.15 * torch.rand(1, generator=generator).item())
        x1, y1 = (size * (0.3 + 0.2 * torch.rand(2, generator=generator))).tolist()
        box = torch.tensor([[x1, y1, min(x1 + side, size - 1), min(y1 + side, size - 1)]])
        label = torch.randint(1, NUM_CLASSES, (1,), generator=generator)
        targets.append({"boxes": box.to(device), "labels": label.to(device)})
    return images, targets


class ModelFactory:
    """Builds fresh R50 / R50+DS detectors of a profile, all from one shared initial state.

    Args:
        profile: The profile (model section and whether it starts from weights).
        folder: Where the shared initial weights file is written.
        seed: Seed of the random weights and of the calibration batch.

    """

    def __init__(self, profile: BenchProfile, folder: Path, seed: int = 0) -> None:
        self.profile = profile
        torch.manual_seed(seed)
        configs = {
            name: model_config(profile.model_params(attention), NUM_CLASSES, profile.size)
            for name, attention in MODELS.items()
        }
        plain = build_model(configs["R50"])
        calibrate_batchnorm(plain, synthetic_batch(2, profile.size, torch.device("cpu"), seed)[0])
        weights = folder / "initial_r50.pt"
        torch.save(plain.state_dict(), weights)
        self.templates = {
            name: _initialised(config, weights, profile) for name, config in configs.items()
        }

    def build(
        self,
        name: str,
        device: torch.device,
        channels_last: bool = False,
        compile_backend: str | None = None,
    ) -> nn.Module:
        """A fresh detector `name` (``R50`` or ``R50+DS``) in train mode on `device`.

        Args:
            name: A key of `MODELS`.
            device: Where the model goes.
            channels_last: Convert it with `dsnet.models.layout.use_channels_last`.
            compile_backend: Wrap its backbone (ResNet50 + DS + FPN, the fixed-shape part)
                in ``torch.compile`` with this backend (None: not compiled); compilation
                happens at the first call.

        Returns:
            The model, a copy of the initialised template.

        """
        model = copy.deepcopy(self.templates[name]).to(device)
        if channels_last:
            use_channels_last(model)
        if compile_backend is not None:
            model.backbone = torch.compile(model.backbone, backend=compile_backend)
        return model


def _initialised(config: dict, weights: Path, profile: BenchProfile) -> nn.Module:
    """Build `config` from the shared initial `weights` as training would (see module doc)."""
    if profile.pretrained:
        return build_model(config, weights=weights, trainable_layers=profile.trainable_layers)
    model = build_model(config, trainable_layers=profile.trainable_layers)
    model.load_state_dict(torch.load(weights, weights_only=True), strict=False)
    return model


def calibrate_batchnorm(model: nn.Module, images: list[Tensor]) -> None:
    """Set the BatchNorm running statistics of a detector's backbone from `images`.

    Args:
        model: A detector with plain ``BatchNorm2d`` (built without weights).
        images: FloatTensor[3, H, W] in [0, 1]; their statistics become the running ones.

    """
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: exactly this batch's statistics
    model.train()
    with torch.no_grad():
        batched, _ = model.transform(images)
        model.backbone(batched.tensors)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
