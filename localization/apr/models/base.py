"""The base class of the APR models (glue-factory style: ``default_conf``, ``forward(data)``, ``loss``).

Batches (``data``) are dictionaries of tensors built by :class:`localization.apr.data.APRDataset`:

    image:    (B, T, 3, H, W) RGB in [0, 1] (T frames of a temporal window, oldest first; T = 1 for single-image
              models). Models normalise with the ImageNet mean/std themselves.
    position: (B, T, 3) camera centres, world frame, normalised (C - mean) / scale.
    qvec:     (B, T, 4) world-to-camera quaternions (w, x, y, z), w >= 0.

``forward`` returns at least ``position`` (B, T', 3) and ``qvec`` (B, T', 4, unit, w >= 0) for the last T'
frames of the window (T' = T except for VLocNet, which needs a previous frame). ``loss`` returns
``(losses, metrics)``: dicts of scalar tensors, ``losses["total"]`` is optimised.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from fgsn.models.resnet import ResNet
from fgsn.weights import load_resnet_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BaseAPR(nn.Module):
    """Shared set-up: configuration, ImageNet normalisation, pose statistics buffers, inference helper.

    Subclasses define ``default_conf`` (merged over :attr:`base_default_conf`), ``_init(conf)``, ``_forward``
    and ``loss``.

    Buffers ``pose_mean`` (3,) and ``pose_scale`` (1,) hold the training split's position statistics
    (metres), so that a checkpoint's state dict alone maps outputs back to world coordinates; ``pose_qvec`` (4,)
    the mean training rotation (not in the state dict: it comes with the checkpoint's ``pose_stats``).
    """

    base_default_conf: dict[str, Any] = {
        "name": None,  # registry name (localization.apr.models.MODELS)
        "backbone": {
            "depth": 34,  # ResNet depth: 10, 18, 34, 50, 101
            "base_width": 64,  # stem / first-stage channels (64 = ImageNet layout)
            "pretrained": None,  # local path to torchvision-layout ImageNet weights, or null (random init)
        },
    }
    default_conf: dict[str, Any] = {}
    window: int = 1  # frames per training sample the model needs at least
    iteration: int = 0  # the training step being taken (0-based); set by the trainer before each step, read by
    # models whose loss depends on it (VLocNet's alternating optimisation)

    def __init__(self, conf: dict | DictConfig | None = None):
        super().__init__()
        base = OmegaConf.merge(OmegaConf.create(self.base_default_conf), OmegaConf.create(self.default_conf))
        OmegaConf.set_struct(base, True)
        self.conf = conf = OmegaConf.merge(base, conf or {})
        self.register_buffer("pose_mean", torch.zeros(3))
        self.register_buffer("pose_scale", torch.ones(1))
        self.register_buffer("pose_qvec", torch.tensor([1.0, 0.0, 0.0, 0.0]), persistent=False)
        self.register_buffer("img_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("img_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._init(conf)

    # --- to implement ----------------------------------------------------------------------------------------
    def _init(self, conf: DictConfig) -> None:
        raise NotImplementedError

    def _forward(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, pred: dict[str, torch.Tensor], data: dict[str, torch.Tensor]):
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------------------------
    def make_backbone(self, activation: str = "relu", output_stride: int = 32) -> ResNet:
        """A ResNet of ``conf.backbone`` (torchvision layout, He-normal conv initialisation).

        Args:
            activation: ``"relu"`` or ``"elu"``.
            output_stride: 32, or 16 / 8 (the last stages keep stride 1 and dilate, as FGSN's PSPNet; the
                colourization model's Res5 is at 1/16).
        """
        bconf = self.conf.backbone
        return ResNet(bconf.depth, bconf.base_width, activation, output_stride=output_stride, init="kaiming")

    def param_groups(self, train_conf: DictConfig) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (torch param-group dicts; a group without ``lr`` gets ``train.lr``).

        Default: one group of every trainable parameter. Models with per-branch learning rates override this
        (the colourization model). Args: train_conf: the ``train`` section of the training configuration.
        """
        return [{"params": [p for p in self.parameters() if p.requires_grad], "name": "all"}]

    def load_pretrained(self, prefixes: tuple[str, ...] = ("backbone.",)) -> None:
        """Load ``backbone.pretrained`` (if set; a local torchvision-layout ImageNet file) into every ResNet under
        the given key prefixes (:func:`fgsn.weights.load_resnet_weights`, non-strict: what does not fit is
        logged)."""
        if self.conf.backbone.pretrained:
            for p in prefixes:
                load_resnet_weights(self, self.conf.backbone.pretrained, prefix=p)

    def normalize_image(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.img_mean) / self.img_std

    def forward(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = data["image"]
        if image.ndim != 5 or image.shape[2] != 3:
            raise ValueError(f"data['image'] must be (B, T, 3, H, W), got {tuple(image.shape)}")
        if image.shape[1] < self.window and self.training:
            raise ValueError(f"{type(self).__name__} needs windows of {self.window} frames, got {image.shape[1]}")
        return self._forward(data)

    def set_pose_stats(self, mean, scale: float, qvec=None) -> None:
        """Set the training split's mean centre (3,) and scale (metres) and, optionally, its mean rotation (4,)
        (the starting pose of sequential inference; kept out of the state dict, restored from ``pose_stats``)."""
        self.pose_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.pose_scale.fill_(float(scale))
        if qvec is not None:
            self.pose_qvec.copy_(torch.as_tensor(qvec, dtype=torch.float32))

    def denormalize(self, position: torch.Tensor) -> torch.Tensor:
        """Normalised positions (..., 3) -> world coordinates, metres."""
        return position * self.pose_scale + self.pose_mean

    def normalize(self, position: torch.Tensor) -> torch.Tensor:
        return (position - self.pose_mean) / self.pose_scale

    @torch.no_grad()
    def predict(self, data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Poses of the last frame of each window, in world units.

        Returns:
            position: (B, 3) camera centres, metres. qvec: (B, 4) world-to-camera quaternions, w >= 0.
        """
        pred = self(data)
        return self.denormalize(pred["position"][:, -1]), pred["qvec"][:, -1]


def flatten_frames(image: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) -> (B T, C, H, W)."""
    return image.flatten(0, 1)


def pose_metrics(pred, data, pose_scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean position error (metres) and rotation error (degrees) of the final predictions, for logging."""
    with torch.no_grad():
        T = pred["position"].shape[1]
        p, q = data["position"][:, -T:], data["qvec"][:, -T:]
        err_t = ((pred["position"] - p).norm(dim=-1) * pose_scale).mean()
        dot = (pred["qvec"] * q).sum(-1).abs().clamp(max=1.0)
        err_R = torch.rad2deg(2 * torch.arccos(dot)).mean()
    return {"err_t_m": err_t, "err_R_deg": err_R}
