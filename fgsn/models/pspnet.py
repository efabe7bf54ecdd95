"""PSPNet (Zhao et al., CVPR 2017) as used by FGSN (Larsson et al., ICCV 2019).

Backbone: ``fgsn.models.resnet.dilated_resnet`` (output stride 8). Head:

- pyramid pooling over ``bins`` (default 1, 2, 3, 6): adaptive average pool, 1x1 conv C->C/len(bins) + BN + ReLU,
  bilinear upsampling (align_corners=True, as the Caffe/PyTorch PSPNet checkpoints were trained), concatenated
  with the input in the order [input, bins...] (2C channels);
- ``conv5_4``: 3x3 conv 2C->512 + BN: the 512-d **feature used for clustering** (before the ReLU);
- Dropout2d(0.1), ReLU, ``conv6``: 1x1 conv 512->K with bias;
- auxiliary head on ``layer3`` (the Caffe ``layer4``, 1024 channels for ResNet-50/101): 3x3 conv -> 256 + BN +
  ReLU + Dropout2d(0.1) + 1x1 conv 256->K; its loss weight is ``aux_weight`` (0.4).

Input (``data["image"]``): (B, 3, H, W) **RGB, 0-255** floats. The network subtracts the mean (123.68, 116.779,
103.939) and, when ``bgr`` is set (the public PSPNet weights expect it), flips the channels to BGR.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import OmegaConf

from ..utils.config import between, list_of, one_of
from .resnet import dilated_resnet

logger = logging.getLogger(__name__)

RGB_MEAN = (123.68, 116.779, 103.939)


class PyramidPooling(nn.Module):
    """Pyramid pooling module: (B, C, h, w) -> (B, 2C, h, w), order [input, bins[0], bins[1], ...]."""

    def __init__(self, in_ch: int, bins=(1, 2, 3, 6)):
        super().__init__()
        self.bins = tuple(int(b) for b in bins)
        out = in_ch // len(self.bins)
        self.stages = nn.ModuleList(
            nn.ModuleDict({"conv": nn.Conv2d(in_ch, out, 1, bias=False), "bn": nn.BatchNorm2d(out)})
            for _ in self.bins)
        self.out_channels = in_ch + out * len(self.bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        outs = [x]
        for b, st in zip(self.bins, self.stages):
            y = F.relu(st["bn"](st["conv"](F.adaptive_avg_pool2d(x, b))))
            outs.append(F.interpolate(y, (h, w), mode="bilinear", align_corners=True))
        return torch.cat(outs, 1)


class PSPNet(nn.Module):
    """PSPNet with an exposed ``conv5_4`` feature (glue-factory style: ``default_conf``, ``forward``, ``loss``).

    Args:
        conf: overrides of ``default_conf`` (dict or OmegaConf).
    """

    default_conf = {
        "depth": 101,  # ResNet depth: 18, 34, 50 or 101 (101 in the paper)
        "num_classes": 100,  # K, number of output labels (clusters, or semantic classes for pre-training)
        "bins": [1, 2, 3, 6],  # pyramid pooling output sizes, cells per side
        "feature_dim": 512,  # channels of the conv5_4 feature used for clustering
        "aux": True,  # build the auxiliary head on layer3 (Caffe layer4)
        "aux_weight": 0.4,  # weight of the auxiliary cross-entropy
        "dropout": 0.1,  # Dropout2d probability before both classifiers
        "bgr": True,  # flip to BGR after mean subtraction (the public PSPNet weights expect it)
        "ignore_index": -1,  # label value ignored by the losses
    }
    conf_checks = {"depth": one_of(18, 34, 50, 101), "num_classes": between(1, integer=True),
                   "bins": list_of(between(1, integer=True)), "feature_dim": between(1, integer=True),
                   "aux_weight": between(0), "dropout": between(0, 1, hi_open=True)}

    def __init__(self, conf=None):
        super().__init__()
        conf = OmegaConf.merge(OmegaConf.create(self.default_conf), OmegaConf.create(dict(conf or {})))
        self.conf = conf
        self.backbone = dilated_resnet(conf.depth)
        c3, c4 = self.backbone.channels[3], self.backbone.channels[4]
        self.ppm = PyramidPooling(c4, conf.bins)
        self.conv5_4 = nn.Conv2d(self.ppm.out_channels, conf.feature_dim, 3, padding=1, bias=False)
        self.bn5_4 = nn.BatchNorm2d(conf.feature_dim)
        self.drop = nn.Dropout2d(conf.dropout)
        self.conv6 = nn.Conv2d(conf.feature_dim, conf.num_classes, 1)
        if conf.aux:
            self.aux_conv = nn.Conv2d(c3, 256, 3, padding=1, bias=False)
            self.aux_bn = nn.BatchNorm2d(256)
            self.aux_cls = nn.Conv2d(256, conf.num_classes, 1)
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.conv6.out_channels

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB 0-255 -> mean-subtracted network input (BGR if ``conf.bgr``)."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"Expected a (B, 3, H, W) image tensor, got shape {tuple(image.shape)}")
        x = image - self.mean
        return x.flip(1) if self.conf.bgr else x

    def forward(self, data: dict) -> dict:
        """Args:
            data: ``image`` (B, 3, H, W) RGB 0-255.
        Returns:
            ``features``: (B, 512, h, w) conv5_4 + BN output (before ReLU), h = (H - 1) // 8 + 1;
            ``logits``: (B, K, h, w) class scores at output stride 8;
            ``aux_logits``: (B, K, h, w), only in training mode with ``conf.aux``.
        """
        x = self.normalize(data["image"])
        c3, c4 = self.backbone(x)[3:5]
        f = self.bn5_4(self.conv5_4(self.ppm(c4)))
        pred = {"features": f, "logits": self.conv6(F.relu(self.drop(f)))}
        if self.conf.aux and self.training:
            a = F.relu(self.aux_bn(self.aux_conv(c3)))
            pred["aux_logits"] = self.aux_cls(self.drop(a))
        return pred

    def classifier_parameters(self) -> list[nn.Parameter]:
        """Parameters of the final classifiers (``conv6`` and the auxiliary ``aux_cls``)."""
        mods = [self.conv6] + ([self.aux_cls] if self.conf.aux else [])
        return [p for m in mods for p in m.parameters()]

    def reset_classifier(self, num_classes: int | None = None, std: float = 0.01) -> None:
        """Re-initialise ``conv6`` and the auxiliary classifier with N(0, std), bias 0 (FGSN, after clustering).

        Args:
            num_classes: new K; keeps the current one when None.
        """
        k = self.num_classes if num_classes is None else int(num_classes)
        dev = self.conv6.weight.device
        if k != self.num_classes:
            self.conv6 = nn.Conv2d(self.conf.feature_dim, k, 1).to(dev)
            if self.conf.aux:
                self.aux_cls = nn.Conv2d(256, k, 1).to(dev)
            self.conf.num_classes = k
        for m in [self.conv6] + ([self.aux_cls] if self.conf.aux else []):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)

    def loss(self, pred: dict, data: dict) -> tuple[dict, dict]:
        """Semantic-segmentation cross-entropy (main + ``aux_weight`` x auxiliary).

        Args:
            pred: output of ``forward``.
            data: ``labels`` (B, H, W) int64 at the input resolution, ``conf.ignore_index`` ignored.
        Returns:
            losses: ``total``, ``ce``, ``aux`` (scalars); metrics: ``pixel_acc``.
        """
        from ..losses import class_loss

        labels = data["labels"]
        size = labels.shape[-2:]
        logits = upsample(pred["logits"], size)
        ce = class_loss(logits, labels, self.conf.ignore_index)
        losses = {"ce": ce, "total": ce}
        if "aux_logits" in pred:
            aux = class_loss(upsample(pred["aux_logits"], size), labels, self.conf.ignore_index)
            losses["aux"] = aux
            losses["total"] = ce + self.conf.aux_weight * aux
        valid = labels != self.conf.ignore_index
        acc = ((logits.argmax(1) == labels) & valid).sum() / valid.sum().clamp(min=1)
        return losses, {"pixel_acc": acc.detach()}

    @classmethod
    def from_checkpoint(cls, path: str | Path, conf=None, layout: str = "auto", strict: bool = True,
                        map_location="cpu") -> "PSPNet":
        """Build a network and load weights from a local file (nothing is downloaded).

        Args:
            path: a checkpoint of this project (``train-fgsn`` / ``pretrain-seg``: a dict with ``model`` and
                ``config``), a cross-season-segmentation PSPNet state dict ("Seg" init) or a torchvision-layout
                ImageNet ResNet state dict ("Class" init).
            conf: network configuration; for project checkpoints it defaults to the stored one.
            layout: ``auto``, ``native``, ``pspnet`` or ``torchvision`` (see ``fgsn.weights``).
            strict: raise on unknown, missing or mis-shaped keys (beyond those the layout cannot provide).
        Returns:
            The network in eval mode.
        """
        from ..weights import load_state_dict_file, load_weights

        ckpt = load_state_dict_file(path, map_location)
        if conf is None and isinstance(ckpt, dict) and "config" in ckpt and "model" in ckpt:
            conf = ckpt["config"]["model"] if "model" in ckpt["config"] else ckpt["config"]
        model = cls(conf)
        load_weights(model, ckpt, layout=layout, strict=strict)
        return model.eval()


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of stride-8 outputs to the input size, align_corners=True (as PSPNet)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
