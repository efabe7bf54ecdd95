"""ResNet backbones written in the project (He et al., CVPR 2016), with the torchvision key layout.

Module names are those of torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layer<n>.<b>.downsample.{0,1}``; the classifier ``fc`` is not built), so an ImageNet checkpoint saved from
torchvision loads onto it key by key with :func:`load_imagenet_weights`. Nothing is ever downloaded.

Variants for the APR baselines:
    * ``depth``: 18 / 34 (basic blocks), 50 / 101 (bottlenecks), and 10 (one basic block per stage, for
      CPU presets).
    * ``base_width``: channels of the stem and the first stage (64 in the papers; 16 or 32 for CPU presets;
      ImageNet weights only fit 64).
    * ``activation``: ``"relu"`` or ``"elu"`` (VLocNet replaces every ReLU by ELU).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

_DEPTHS = {10: ("basic", (1, 1, 1, 1)), 18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
           50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}


def _act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "elu":
        return nn.ELU(inplace=True)
    raise ValueError(f"activation must be 'relu' or 'elu', got {name!r}")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a residual connection (ResNet-10/18/34)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int, activation: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act = _act(activation)
        out = width * self.expansion
        self.downsample = (nn.Sequential(nn.Conv2d(in_ch, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                           if stride != 1 or in_ch != out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return self.act(h + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, as torchvision's v1.5), 1x1 expand, residual (ResNet-50/101)."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, activation: str):
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.act = _act(activation)
        self.downsample = (nn.Sequential(nn.Conv2d(in_ch, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                           if stride != 1 or in_ch != out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.bn1(self.conv1(x)))
        h = self.act(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return self.act(h + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """ResNet trunk without classifier.

    Stages: ``stem`` (conv1 7x7/2, bn1, act, maxpool 3x3/2; stride 4), ``layer1`` (stride 4), ``layer2`` (8),
    ``layer3`` (16), ``layer4`` (32). VLocNet's Res2..Res5 are ``layer1``..``layer4``.

    Args:
        depth: 10, 18, 34, 50 or 101.
        base_width: channels of the stem and of ``layer1``'s 3x3 convs (64 in torchvision).
        activation: ``"relu"`` or ``"elu"``.
        in_channels: input channels (3 for RGB).
    Attributes:
        channels: output channels of (stem, layer1, layer2, layer3, layer4).
    """

    def __init__(self, depth: int = 34, base_width: int = 64, activation: str = "relu", in_channels: int = 3):
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
        kind, counts = _DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(in_channels, base_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.act = _act(activation)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        ch = base_width
        self.channels = [base_width]
        for i, n in enumerate(counts):
            width = base_width * 2 ** i
            blocks = []
            for b in range(n):
                blocks.append(block(ch, width, 2 if (b == 0 and i > 0) else 1, activation))
                ch = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            self.channels.append(ch)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.act(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor, upto: int = 4) -> list[torch.Tensor]:
        """(B, C, H, W) image -> list of stage outputs [stem, layer1, ..., layer<upto>]."""
        if x.ndim != 4:
            raise ValueError(f"ResNet input must be (B, C, H, W), got {tuple(x.shape)}")
        feats = [self.stem(x)]
        for i in range(1, upto + 1):
            feats.append(getattr(self, f"layer{i}")(feats[-1]))
        return feats


def load_imagenet_weights(module: nn.Module, path: str | Path, prefix: str = "") -> dict[str, list[str]]:
    """Load an ImageNet ResNet checkpoint in torchvision's key layout from a local file (never downloads).

    The classifier (``fc.*``) is dropped. Keys missing from the file, keys of the file the module lacks,
    and tensors whose shape does not fit (e.g. a ``base_width`` other than 64) are logged and returned;
    matching tensors are loaded.

    Args:
        module: the ResNet (or a module containing it under ``prefix``).
        path: a ``.pth`` file holding a state dict (optionally wrapped in ``state_dict``/``model``, keys
            optionally prefixed by ``module.``).
        prefix: key prefix of the ResNet inside ``module`` (e.g. ``"backbone."``).
    Returns:
        ``{"missing": [...], "unexpected": [...], "mismatched": [...]}`` (module key names).
    Raises:
        FileNotFoundError: ``path`` does not exist. ValueError: the file holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ImageNet weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for k in ("state_dict", "model"):
        if isinstance(state, dict) and k in state and isinstance(state[k], dict):
            state = state[k]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    src = {prefix + k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    own = module.state_dict()
    own_backbone = {k for k in own if k.startswith(prefix)}
    load, mismatched = {}, []
    for k, v in src.items():
        if k in own:
            if own[k].shape == v.shape:
                load[k] = v
            else:
                mismatched.append(f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}")
    unexpected = sorted(k for k in src if k not in own)
    missing = sorted(k for k in own_backbone if k not in load and not k.endswith("num_batches_tracked"))
    module.load_state_dict(load, strict=False)
    report = {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}
    logger.info("Loaded %d ImageNet tensors from %s (%d missing, %d unexpected, %d shape mismatches).",
                len(load), path, len(missing), len(unexpected), len(mismatched))
    for what, keys in report.items():
        if keys:
            logger.warning("ImageNet weights %s: %s", what, ", ".join(keys[:20]) + (" ..." if len(keys) > 20 else ""))
    return report
