"""Colourization as an auxiliary task for camera relocalization (Tian et al., "Deep auxiliary learning for visual
localization using colorization task"; docs/ALGORITHMS.md section 11, shared docs).

The paper's structure, as implemented here:

    * a U-Net colourizer: the L channel of CIE Lab -> the ab channels, trained with an L1 loss; encoder of four
      stride-2 stages (1/16 resolution at the bottleneck), decoder with skip connections;
    * a ResNet localization trunk (ResNet-50 in the paper) up to Res5 (``layer4``) at 1/16 of the input: ``layer4``
      keeps stride 1 and dilates its 3x3 convs by 2 (``fgsn.models.resnet.ResNet(output_stride=16)``, the option
      FGSN's PSPNet uses), so Res5 and the colourizer's bottleneck are on the same grid;
    * M_fuse = ReLU(conv([Res5, colour features])) (channel concatenation, 3x3 conv);
    * attention: M_SaE = M_fuse * GMP(M_fuse) (GMP: per-channel global max), mask = channel mean of M_SaE
      (B, 1, h, w), M_att = M_fuse * mask;
    * the final fusion: M_final = ReLU(conv([M_fuse, M_att])), "fused again by the same conv + ReLU operation".
      We read "the same" as the same kind of operation (concatenation, 3x3 conv, ReLU) with its own weights: the
      first fusion takes C5 + C_colour input channels (2048 + 256 with the paper's networks), the second
      2 C_fuse, so one set of weights cannot serve both in general;
    * FC 2048 -> ReLU -> FC 3 (position) and FC 3 (log q); q = exp(log q) (:func:`~localization.apr.pose.qexp`,
      put on the w >= 0 hemisphere). The map becomes the FC's input by global average pooling, and a dropout
      precedes the pose FCs: both **(ours)**, the paper's description names neither.

Loss: L = ||x^ - x||_2 + 3 ||log q^ - log q||_2 + 0.2 L_color. The paper writes ||q^ - q||_2 and trains "through log
q"; we read this as MapNet / AtLoc do: the distance is taken between log quaternions
(:func:`~localization.apr.pose.qlog` of the truth, on the w >= 0 hemisphere). Option ``q_loss: exp`` **(ours,
off)**: ||exp(log q^) - q||_2, the formula on the exponential; on the CPU preset it diverged (position loss 5e3
after 20 iterations; our diagnosis): exp is periodic in log q^, so nothing bounds the output's norm, and the
attention, cubic in M_fuse, amplifies the growing features. L_color = the L1 sum of |ab^ - ab| in Lab units over the
pixels and both channels of an image, averaged over the images of the batch. Option ``color_loss: mean_scaled``
**(ours, off)**: the mean of |ab^ - ab| / 110 (the former definition).

Optimisation: two parameter groups (:meth:`ColorizationAPR.param_groups`): the localization part (trunk,
fusions, FCs) at ``train.lr`` and the colourizer at ``colorizer_lr``. The paper gives "Adam lr 3e-4 / 1e-3" with
poly decay without saying which rate is whose; our reading: the localization part 3e-4 (the order of the other
APRs' rates), the colourizer, trained from scratch on a dense task, 1e-3 (``configs/apr/colorization.yaml``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fgsn.utils.config import one_of

from ..pose import qexp, qlog, qnormalize
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
    """The colourization-auxiliary APR (structure, loss and optimisation in the module docstring).

    ``forward`` returns ``position`` (B, T, 3), ``logq`` (B, T, 3), ``qvec`` (B, T, 4) = exp(log q) on the w >= 0
    hemisphere, ``ab`` / ``ab_gt`` (B T, 2, H, W) predicted / true ab channels in Lab units.
    """

    default_conf = {
        "backbone": {"depth": 50},
        "color_width": 32,  # channels of the U-Net's first stage (x2 per stage, max x8)
        "fuse_channels": 512,  # channels of the fused maps M_fuse and M_final
        "fc_dim": 2048,  # FC width before the pose outputs
        "dropout": 0.5,  # dropout before the pose FCs (ours)
        "beta": 3.0,  # orientation weight
        "color_weight": 0.2,  # weight of the colourization L1 loss
        "q_loss": "log",  # "log": ||log q^ - log q||_2 (paper, our reading); "exp": ||exp(log q^) - q||_2 (ours)
        "color_loss": "sum",  # "sum": L1 sum over pixels and ab channels, Lab units (paper); "mean_scaled" (ours)
        "colorizer_lr": None,  # learning rate of the colourizer's parameters (null: train.lr); paper preset 1e-3
    }
    conf_checks = {"q_loss": one_of("log", "exp"), "color_loss": one_of("sum", "mean_scaled")}  # at merge time

    def _init(self, conf):
        if conf.q_loss not in ("log", "exp"):
            raise ValueError(f"q_loss must be 'log' or 'exp', got {conf.q_loss!r}")
        if conf.color_loss not in ("sum", "mean_scaled"):
            raise ValueError(f"color_loss must be 'sum' or 'mean_scaled', got {conf.color_loss!r}")
        self.backbone = self.make_backbone(output_stride=16)
        self.colorizer = UNetColorizer(conf.color_width)
        C = conf.fuse_channels
        self.fuse = nn.Sequential(nn.Conv2d(self.backbone.channels[-1] + self.colorizer.channels, C, 3, 1, 1),
                                  nn.ReLU(inplace=True))
        self.fuse_final = nn.Sequential(nn.Conv2d(2 * C, C, 3, 1, 1), nn.ReLU(inplace=True))
        self.fc = nn.Linear(C, conf.fc_dim)
        self.drop = nn.Dropout(conf.dropout)
        self.fc_p = nn.Linear(conf.fc_dim, 3)
        self.fc_q = nn.Linear(conf.fc_dim, 3)  # log q
        self.load_pretrained()

    @staticmethod
    def attention(m_fuse: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> M_att = M_fuse * mean_c(M_fuse * GMP(M_fuse)), (N, C, h, w)."""
        m_sae = m_fuse * m_fuse.amax(dim=(2, 3), keepdim=True)
        return m_fuse * m_sae.mean(1, keepdim=True)

    def param_groups(self, train_conf):
        """Two groups: ``localization`` (everything but the colourizer) at ``train_conf.lr`` and ``colorizer`` at
        ``conf.colorizer_lr`` (``train_conf.lr`` when null)."""
        color = [p for p in self.colorizer.parameters() if p.requires_grad]
        ids = {id(p) for p in color}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        lr_c = train_conf.lr if self.conf.colorizer_lr is None else self.conf.colorizer_lr
        return [{"params": rest, "lr": float(train_conf.lr), "name": "localization"},
                {"params": color, "lr": float(lr_c), "name": "colorizer"}]

    def _forward(self, data):
        B, T, _, H, W = data["image"].shape
        if H % 16 or W % 16:
            raise ValueError(f"colorization model needs image sizes divisible by 16, got {H}x{W}")
        rgb = flatten_frames(data["image"])
        lab = rgb_to_lab(rgb)
        ab_hat, color_feat = self.colorizer(lab[:, :1] / 100.0)
        f5 = self.backbone(self.normalize_image(rgb))[-1]  # Res5 at 1/16, the colourizer bottleneck's grid
        m_fuse = self.fuse(torch.cat([f5, color_feat], 1))
        m = self.fuse_final(torch.cat([m_fuse, self.attention(m_fuse)], 1))
        h = self.drop(torch.relu(self.fc(m.mean((2, 3)))))
        p, logq = self.fc_p(h), self.fc_q(h)
        return {"position": p.view(B, T, 3), "logq": logq.view(B, T, 3), "qvec": qnormalize(qexp(logq)).view(B, T, 4),
                "ab": ab_hat * _AB_SCALE, "ab_gt": lab[:, 1:]}

    def color_loss(self, ab_hat: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """The colourization L1 loss of (N, 2, H, W) predicted / true ab channels in Lab units.

        ``sum`` (paper): sum over pixels and channels of |ab^ - ab|, averaged over the N images; ``mean_scaled``
        (ours): mean over all elements of |ab^ - ab| / 110.
        """
        if self.conf.color_loss == "sum":
            return (ab_hat - ab).abs().flatten(1).sum(1).mean()
        return ((ab_hat - ab) / _AB_SCALE).abs().mean()

    def loss(self, pred, data):
        """The paper's loss (module docstring): losses ``total``, ``x``, ``q``, ``color`` and the pose metrics.

        ``pred`` as returned by ``forward``; ``data["position"]`` (B, T, 3) normalised, ``data["qvec"]`` (B, T, 4).
        """
        L_x = (pred["position"] - data["position"]).norm(dim=-1).mean()
        if self.conf.q_loss == "log":
            L_q = (pred["logq"] - qlog(data["qvec"])).norm(dim=-1).mean()
        else:
            L_q = (pred["qvec"] - data["qvec"]).norm(dim=-1).mean()
        L_c = self.color_loss(pred["ab"], pred["ab_gt"])
        total = L_x + self.conf.beta * L_q + self.conf.color_weight * L_c
        return {"total": total, "x": L_x, "q": L_q, "color": L_c}, pose_metrics(pred, data, self.pose_scale)
