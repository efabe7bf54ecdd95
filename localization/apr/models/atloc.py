"""AtLoc: attention-guided camera localization (Wang et al., AAAI 2020).

ResNet-34 (ImageNet) -> global average pooling -> FC to ``feat_dim`` (2048) -> ReLU -> non-local
self-attention on the feature vector -> dropout 0.5 -> FC 3 (position) and FC 3 (log-quaternion).

Attention (as in the authors' code): theta, phi, g: linear maps C -> C/8; f = phi(x) theta(x)^T (a (C/8, C/8)
matrix per sample); y = softmax(f) g(x); Att(x) = W y + x with W: C/8 -> C.

Loss: ||p - p^||_1 e^-beta + beta + ||log q - log q^||_1 e^-gamma + gamma, beta and gamma learned
(init 0 and -3).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..losses import atloc_errors, learned_weighting
from ..pose import qexp, qnormalize
from .base import BaseAPR, flatten_frames, pose_metrics


class NonLocalAttention(nn.Module):
    """AtLoc's self-attention block on (B, C) feature vectors; C must be divisible by ``reduction``."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        if channels % reduction:
            raise ValueError(f"attention channels {channels} not divisible by {reduction}")
        c = channels // reduction
        self.g = nn.Linear(channels, c)
        self.theta = nn.Linear(channels, c)
        self.phi = nn.Linear(channels, c)
        self.W = nn.Linear(c, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C) -> (B, C)."""
        g = self.g(x).unsqueeze(-1)  # (B, c, 1)
        theta = self.theta(x).unsqueeze(1)  # (B, 1, c)
        phi = self.phi(x).unsqueeze(-1)  # (B, c, 1)
        f = torch.softmax(phi @ theta, dim=-1)  # (B, c, c)
        y = (f @ g).squeeze(-1)  # (B, c)
        return self.W(y) + x


class AtLoc(BaseAPR):
    default_conf = {
        "feat_dim": 2048,  # FC width after the backbone (attention input)
        "dropout": 0.5,  # dropout before the pose FCs
        "attention": True,  # false: the "AtLoc without attention" ablation
        "beta_init": 0.0,  # initial learned position log-weight
        "gamma_init": -3.0,  # initial learned orientation log-weight
        "learn_weights": True,  # false: keep beta and gamma fixed at their initial values
    }

    def _init(self, conf):
        self.backbone = self.make_backbone()
        self.fc = nn.Linear(self.backbone.channels[-1], conf.feat_dim)
        self.attention = NonLocalAttention(conf.feat_dim) if conf.attention else nn.Identity()
        self.drop = nn.Dropout(conf.dropout)
        self.fc_p = nn.Linear(conf.feat_dim, 3)
        self.fc_q = nn.Linear(conf.feat_dim, 3)
        self.s_x = nn.Parameter(torch.tensor(float(conf.beta_init)), requires_grad=conf.learn_weights)
        self.s_q = nn.Parameter(torch.tensor(float(conf.gamma_init)), requires_grad=conf.learn_weights)
        self.load_pretrained()

    def _forward(self, data):
        B, T = data["image"].shape[:2]
        x = self.backbone(self.normalize_image(flatten_frames(data["image"])))[-1].mean((2, 3))
        x = self.drop(self.attention(torch.relu(self.fc(x))))
        p = self.fc_p(x).view(B, T, 3)
        logq = self.fc_q(x).view(B, T, 3)
        return {"position": p, "logq": logq, "qvec": qnormalize(qexp(logq))}

    def absolute_loss(self, pred, data) -> tuple[torch.Tensor, dict]:
        err_p, err_q = atloc_errors(pred["position"], pred["logq"], data["position"], data["qvec"])
        total = learned_weighting(err_p, err_q, self.s_x, self.s_q)
        return total, {"abs_p": err_p, "abs_q": err_q}

    def loss(self, pred, data):
        total, terms = self.absolute_loss(pred, data)
        metrics = pose_metrics(pred, data, self.pose_scale)
        metrics.update({"s_x": self.s_x.detach(), "s_q": self.s_q.detach()})
        return {"total": total, **terms}, metrics
