"""DSNet models: attention modules (DS, SE, SK), backbones and the Faster R-CNN builder."""

from dsnet.models.attention import ATTENTIONS
from dsnet.models.backbones import BACKBONES
from dsnet.models.detector import build_detector

__all__ = ["ATTENTIONS", "BACKBONES", "build_detector"]
