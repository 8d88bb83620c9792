"""The network a config describes (the one place that knows both network classes)."""

from __future__ import annotations

from torch import nn

from adm.nets.classifier import Classifier
from adm.nets.config import ClassifierConfig, UNetConfig
from adm.nets.unet import UNet


def build_model(cfg: UNetConfig | ClassifierConfig) -> nn.Module:
    """The network a config describes: UNet for UNetConfig, Classifier for ClassifierConfig."""
    if isinstance(cfg, UNetConfig):
        return UNet(cfg)
    if isinstance(cfg, ClassifierConfig):
        return Classifier(cfg)
    raise TypeError(f"build_model needs a UNetConfig or ClassifierConfig, got {type(cfg).__name__}")
