"""VLocNet (Valada et al., ICRA 2018): global pose regression fused with the previous pose, plus an auxiliary
visual-odometry stream.

Architecture (ResNet-50 with every ReLU replaced by ELU; Res1..Res5 = ``conv1``, ``layer1`` .. ``layer4``):
    * shared trunk Res1-Res3 (stem, ``layer1``, ``layer2``) for every frame: the odometry stream shares
      these weights with the global stream;
    * global stream: Res4 -> fusion of the previous pose (7 numbers: normalised position, quaternion) through an
      FC layer (``pose_channels`` outputs) tiled over Res4's grid, concatenated and fused back to Res4's width by
      a 1x1 conv + BN + ELU (so Res5 keeps its ImageNet layout) -> Res5 -> GAP -> FC 1024 -> FC 3 and FC 4;
    * odometry stream: the Res3 maps of frames t-1 and t concatenated, reduced by a 1x1 conv, then its own
      Res4, Res5 -> GAP -> FC 1024 -> FC 3 (translation in camera t-1's frame) and FC 4 (cam_t from cam_t-1).

Training windows have T >= 2 frames (``data.steps``; 3 by default): frame k >= 1 gets the ground-truth pose
of frame k-1 (with Gaussian noise, a project choice that keeps the network from copying it) as previous
pose, so predictions cover frames 1..T-1; with ``own_prev_prob`` > 0 frames k >= 2 may get the model's own
detached prediction of frame k-1 instead (scheduled sampling, ours). At test time the previous pose is the previous prediction
(:mod:`localization.apr.inference`).

Loss with learned weights (init s_x = 0, s_q = -3), for each stream:
    L = L_x e^-s_x + s_x + L_q e^-s_q + s_q, L_x = ||x - x^||_2, L_q = ||q - q^||_2;
the geometric consistency loss adds, to L_x and L_q, the error of the relative pose between consecutive
global predictions (needs T >= 3) against the ground-truth relative pose.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..losses import learned_weighting, relative_errors
from ..pose import qmul, qnormalize, relative_pose
from .base import BaseAPR, pose_metrics
from .heads import PoseHead


class VLocNet(BaseAPR):
    default_conf = {
        "backbone": {"depth": 50},
        "fc_dim": 1024,  # hidden FC width of both pose heads
        "dropout": 0.2,  # dropout before the pose FCs
        "pose_channels": 64,  # channels of the previous-pose embedding tiled over Res4's grid
        "odometry": True,  # train the auxiliary odometry stream
        "geometric_consistency": True,  # add the relative error of consecutive global predictions
        "prev_noise_pos": 0.05,  # std of the noise on the previous position during training, normalised units
        "prev_noise_rot_deg": 2.0,  # std of the noise on the previous orientation during training, degrees
        "prev_mean_prob": 0.0,  # training: probability that a frame's previous pose is the mean training pose (the
        # pose every test sequence starts from; ours), so that the image alone must give the pose when the prior is void
        "own_prev_prob": 0.0,  # training, windows of T >= 3: probability that frame k >= 2 gets the model's own
        # (detached) prediction of frame k-1 as previous pose instead of the perturbed ground truth
        # (scheduled sampling, Bengio et al. 2015; ours), so that it learns to correct its own errors as at test time
        "s_x_init": 0.0,  # initial learned position log-weight
        "s_q_init": -3.0,  # initial learned orientation log-weight
    }
    window = 2
    sequential = True

    def _init(self, conf):
        self.backbone = self.make_backbone("elu")
        ch = self.backbone.channels
        self.pose_fc = nn.Linear(7, conf.pose_channels)
        self.fuse = nn.Sequential(nn.Conv2d(ch[3] + conf.pose_channels, ch[3], 1, bias=False), nn.BatchNorm2d(ch[3]),
                                  nn.ELU(inplace=True))
        self.global_head = PoseHead(ch[4], conf.fc_dim, conf.dropout, "elu")
        self.s_x = nn.Parameter(torch.tensor(float(conf.s_x_init)))
        self.s_q = nn.Parameter(torch.tensor(float(conf.s_q_init)))
        if conf.odometry:
            odo = self.make_backbone("elu")
            self.odo_reduce = nn.Sequential(nn.Conv2d(2 * ch[2], ch[2], 1, bias=False), nn.BatchNorm2d(ch[2]),
                                            nn.ELU(inplace=True))
            self.odo_layer3, self.odo_layer4 = odo.layer3, odo.layer4
            self.odo_head = PoseHead(ch[4], conf.fc_dim, conf.dropout, "elu")
            self.s_x_odo = nn.Parameter(torch.tensor(float(conf.s_x_init)))
            self.s_q_odo = nn.Parameter(torch.tensor(float(conf.s_q_init)))
        self.load_pretrained()
        if conf.odometry and conf.backbone.pretrained:  # the odometry Res4/Res5 start from ImageNet too
            with torch.no_grad():
                self.odo_layer3.load_state_dict(self.backbone.layer3.state_dict())
                self.odo_layer4.load_state_dict(self.backbone.layer4.state_dict())

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Shared Res1-Res3: (N, 3, H, W) -> (N, C3, H/8, W/8)."""
        return self.backbone(self.normalize_image(x), upto=2)[-1]

    def _global(self, f3: torch.Tensor, prev_p: torch.Tensor, prev_q: torch.Tensor):
        f4 = self.backbone.layer3(f3)
        emb = F.elu(self.pose_fc(torch.cat([prev_p, prev_q], -1)))
        emb = emb[:, :, None, None].expand(-1, -1, *f4.shape[-2:])
        f4 = self.fuse(torch.cat([f4, emb], 1))
        p, q = self.global_head(self.backbone.layer4(f4))
        return p, qnormalize(q)

    def _odometry(self, f3_prev: torch.Tensor, f3: torch.Tensor):
        h = self.odo_reduce(torch.cat([f3_prev, f3], 1))
        dp, dq = self.odo_head(self.odo_layer4(self.odo_layer3(h)))
        return dp, qnormalize(dq)

    def _perturb(self, p: torch.Tensor, q: torch.Tensor):
        conf = self.conf
        p = p + conf.prev_noise_pos * torch.randn_like(p)
        axis = F.normalize(torch.randn_like(p), dim=-1)
        half = 0.5 * math.radians(conf.prev_noise_rot_deg) * torch.randn_like(p[..., :1])
        dq = torch.cat([torch.cos(half), torch.sin(half) * axis], -1)
        q = qnormalize(qmul(dq, q))
        if conf.prev_mean_prob > 0:
            reset = torch.rand(p.shape[:-1] + (1,), device=p.device) < conf.prev_mean_prob
            p = torch.where(reset, torch.zeros_like(p), p)
            q = torch.where(reset, self.pose_qvec.to(q).expand_as(q), q)
        return p, q

    def _global_own_prev(self, f3: torch.Tensor, prev_p: torch.Tensor, prev_q: torch.Tensor):
        """Scheduled sampling over a training window: frames 1..T-1 are predicted in order; frame 1 gets the
        perturbed ground truth of frame 0, frame k >= 2, with probability ``own_prev_prob`` (drawn per window and
        frame), the detached prediction of frame k-1 (no gradient through the chain), else the perturbed
        ground truth of frame k-1."""
        B, T = f3.shape[:2]
        ps, qs = [], []
        for k in range(1, T):
            pp, pq = prev_p[:, k - 1], prev_q[:, k - 1]
            if k >= 2:
                own = torch.rand(B, 1, device=f3.device) < self.conf.own_prev_prob
                pp = torch.where(own, ps[-1].detach(), pp)
                pq = torch.where(own, qs[-1].detach(), pq)
            p, q = self._global(f3[:, k], pp, pq)
            ps.append(p)
            qs.append(q)
        return {"position": torch.stack(ps, 1), "qvec": torch.stack(qs, 1)}

    def _forward(self, data):
        image = data["image"]
        B, T = image.shape[:2]
        f3 = self._trunk(image.flatten(0, 1)).unflatten(0, (B, T))
        if "prev_position" in data:  # inference: previous pose given for every frame
            prev_p, prev_q = data["prev_position"], data["prev_qvec"]
            frames = list(range(T))
        else:  # training: previous frame's ground truth, perturbed
            if T < 2:
                raise ValueError("VLocNet needs windows of >= 2 frames or data['prev_position']")
            prev_p, prev_q = data["position"][:, :-1], data["qvec"][:, :-1]
            if self.training:
                prev_p, prev_q = self._perturb(prev_p, prev_q)
            frames = list(range(1, T))
        Tp = len(frames)
        if self.training and "prev_position" not in data and self.conf.own_prev_prob > 0 and T >= 3:
            pred = self._global_own_prev(f3, prev_p, prev_q)
        else:
            p, q = self._global(f3[:, frames].flatten(0, 1), prev_p.reshape(B * Tp, 3), prev_q.reshape(B * Tp, 4))
            pred = {"position": p.view(B, Tp, 3), "qvec": q.view(B, Tp, 4)}
        if self.conf.odometry:
            if "prev_image" in data:
                f3_prev = self._trunk(data["prev_image"].flatten(0, 1)).unflatten(0, (B, -1))
                a, b = torch.cat([f3_prev, f3], 1)[:, -T - 1:-1], f3
            elif T >= 2:
                a, b = f3[:, :-1], f3[:, 1:]
            else:
                return pred
            dp, dq = self._odometry(a.flatten(0, 1), b.flatten(0, 1))
            pred.update({"odo_dp": dp.view(B, -1, 3), "odo_dq": dq.view(B, -1, 4)})
        return pred

    def loss(self, pred, data):
        Tp = pred["position"].shape[1]
        p, q = data["position"][:, -Tp:], data["qvec"][:, -Tp:]
        L_x = (pred["position"] - p).norm(dim=-1).mean()
        L_q = (pred["qvec"] - q).norm(dim=-1).mean()
        losses = {"global_x": L_x, "global_q": L_q}
        if self.conf.geometric_consistency and Tp >= 2:
            r_x, r_q = relative_errors(pred["position"], pred["qvec"], p, q, "l2")
            L_x, L_q = L_x + r_x, L_q + r_q
            losses.update({"geo_x": r_x, "geo_q": r_q})
        total = learned_weighting(L_x, L_q, self.s_x, self.s_q)
        if "odo_dp" in pred:
            P, Q = data["position"], data["qvec"]
            dp, dq = relative_pose(P[:, :-1], Q[:, :-1], P[:, 1:], Q[:, 1:])
            o_x = (pred["odo_dp"] - dp).norm(dim=-1).mean()
            o_q = (pred["odo_dq"] - dq).norm(dim=-1).mean()
            total = total + learned_weighting(o_x, o_q, self.s_x_odo, self.s_q_odo)
            losses.update({"odo_x": o_x, "odo_q": o_q})
        metrics = pose_metrics(pred, data, self.pose_scale)
        metrics.update({"s_x": self.s_x.detach(), "s_q": self.s_q.detach()})
        return {"total": total, **losses}, metrics
