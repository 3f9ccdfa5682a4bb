"""DSNet models: attention (DS, SE, SK), backbones, detector, checkpoints, HU baseline.

`checkpoint` builds a detector from its stored config; `hu_baseline` is the classifier
screening uses without a model.

torch/torchvision; no files other than checkpoints, no MLflow, DVC or KFP.

May import: dsnet.core, dsnet.data
"""

from dsnet.models.attention import ATTENTIONS, AttentionOptions
from dsnet.models.backbones import BACKBONES
from dsnet.models.detector import build_detector

__all__ = ["ATTENTIONS", "BACKBONES", "AttentionOptions", "build_detector"]
