"""Colourization as an auxiliary task for camera relocalization (Tian et al.).

Two branches on the same image:
    * a U-Net colourizer: the L channel of CIE Lab -> the ab channels (L1 loss), encoder of four stride-2
      stages (1/16 resolution at the bottleneck), decoder with skip connections;
    * a ResNet localization trunk (ResNet-50 in the paper) up to Res5 (``layer4``, 1/32 resolution).
The colourizer's 1/16 bottleneck features are average-pooled to Res5's grid, concatenated with Res5 and fused
by a 3x3 conv + ReLU (M_fuse), then attention: M_SaE = M_fuse * GMP(M_fuse) (GMP: per-channel global max),
mask = channel mean of M_SaE (B, 1, h, w), M_att = M_fuse * mask; GAP -> FC 2048 -> ReLU -> dropout -> FC 3
(position) and FC 4 (quaternion).

Loss: ||x^ - x||_2 + 3 ||q^/||q^|| - q||_2 + 0.2 L_color, L_color = mean |ab^ - ab| with ab in Lab units / 110.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..pose import qnormalize
from .base import BaseAPR, flatten_frames, pose_metrics

_AB_SCALE = 110.0  # |a|, |b| < 110 for sRGB colours


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (N, 3, H, W) -> CIE Lab (D65 white): L in [0, 100], a and b roughly in [-110, 110]."""
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"rgb must be (N, 3, H, W), got {tuple(rgb.shape)}")
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    M = rgb.new_tensor([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]])
    xyz = torch.einsum("ij,njhw->nihw", M, lin)
    xyz = xyz / rgb.new_tensor([0.950456, 1.0, 1.088754]).view(1, 3, 1, 1)
    eps = 0.008856
    f = torch.where(xyz > eps, xyz.clamp_min(eps) ** (1 / 3), 7.787 * xyz + 16 / 116)
    L = torch.where(xyz[:, 1:2] > eps, 116 * f[:, 1:2] - 16, 903.3 * xyz[:, 1:2])
    a = 500 * (f[:, 0:1] - f[:, 1:2])
    b = 200 * (f[:, 1:2] - f[:, 2:3])
    return torch.cat([L, a, b], 1)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNetColorizer(nn.Module):
    """U-Net: (N, 1, H, W) L / 100 -> (N, 2, H, W) ab / 110 (tanh); H, W divisible by 16.

    Returns the ab prediction and the (N, 8 w, H/16, W/16) bottleneck features.
    """

    def __init__(self, width: int = 32):
        super().__init__()
        chans = [width, 2 * width, 4 * width, 8 * width, 8 * width]
        self.enc = nn.ModuleList([_conv_block(1, chans[0])] + [_conv_block(chans[i], chans[i + 1]) for i in range(4)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, 2) for i in range(4)])
        self.dec = nn.ModuleList([_conv_block(2 * chans[i], chans[i]) for i in range(4)])
        self.out = nn.Conv2d(chans[0], 2, 1)
        self.channels = chans[-1]

    def forward(self, L: torch.Tensor):
        skips = []
        x = L
        for i, enc in enumerate(self.enc):
            x = enc(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        bottleneck = x
        for i in reversed(range(4)):
            x = self.up[i](x)
            x = self.dec[i](torch.cat([x, skips[i]], 1))
        return torch.tanh(self.out(x)), bottleneck


class ColorizationAPR(BaseAPR):
    default_conf = {
        "backbone": {"depth": 50},
        "color_width": 32,  # channels of the U-Net's first stage (x2 per stage, max x8)
        "fuse_channels": 512,  # channels of the fused map M_fuse
        "fc_dim": 2048,  # FC width before the pose outputs
        "dropout": 0.5,  # dropout before the pose FCs
        "beta": 3.0,  # orientation weight
        "color_weight": 0.2,  # weight of the colourization L1 loss
    }

    def _init(self, conf):
        self.backbone = self.make_backbone()
        self.colorizer = UNetColorizer(conf.color_width)
        self.fuse = nn.Sequential(nn.Conv2d(self.backbone.channels[-1] + self.colorizer.channels, conf.fuse_channels,
                                            3, 1, 1), nn.ReLU(inplace=True))
        self.fc = nn.Linear(conf.fuse_channels, conf.fc_dim)
        self.drop = nn.Dropout(conf.dropout)
        self.fc_p = nn.Linear(conf.fc_dim, 3)
        self.fc_q = nn.Linear(conf.fc_dim, 4)
        with torch.no_grad():
            self.fc_q.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.load_pretrained()

    @staticmethod
    def attention(m_fuse: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> M_att = M_fuse * mean_c(M_fuse * GMP(M_fuse))."""
        m_sae = m_fuse * m_fuse.amax(dim=(2, 3), keepdim=True)
        return m_fuse * m_sae.mean(1, keepdim=True)

    def _forward(self, data):
        B, T, _, H, W = data["image"].shape
        if H % 16 or W % 16:
            raise ValueError(f"colorization model needs image sizes divisible by 16, got {H}x{W}")
        rgb = flatten_frames(data["image"])
        lab = rgb_to_lab(rgb)
        ab_hat, color_feat = self.colorizer(lab[:, :1] / 100.0)
        f5 = self.backbone(self.normalize_image(rgb))[-1]
        color_feat = F.adaptive_avg_pool2d(color_feat, f5.shape[-2:])
        m = self.attention(self.fuse(torch.cat([f5, color_feat], 1)))
        h = self.drop(torch.relu(self.fc(m.mean((2, 3)))))
        p, q = self.fc_p(h), self.fc_q(h)
        return {"position": p.view(B, T, 3), "qvec": qnormalize(q).view(B, T, 4), "qvec_raw": q.view(B, T, 4),
                "ab": ab_hat, "ab_gt": lab[:, 1:] / _AB_SCALE}

    def loss(self, pred, data):
        L_x = (pred["position"] - data["position"]).norm(dim=-1).mean()
        L_q = (pred["qvec"] - data["qvec"]).norm(dim=-1).mean()
        L_c = (pred["ab"] - pred["ab_gt"]).abs().mean()
        total = L_x + self.conf.beta * L_q + self.conf.color_weight * L_c
        return {"total": total, "x": L_x, "q": L_q, "color": L_c}, pose_metrics(pred, data, self.pose_scale)
