"""VLocNet (Valada, Radwan and Burgard, "Deep Auxiliary Learning for Visual Localization and Odometry", ICRA 2018):
global pose regression fused with the previous pose, plus an auxiliary visual-odometry stream.

The paper's structure (ResNet-50 with every ReLU replaced by ELU; Res1..Res5 = ``conv1``, ``layer1`` ..
``layer4`` of :class:`fgsn.models.resnet.ResNet`; wording as summarised in docs/ALGORITHMS.md section 11):

* Global pose stream (Sec. III-A): Res1-Res5 (``backbone``) -> GAP -> FC 1024 -> FC 3 (position) and FC 4
  (quaternion). The previous pose (7 numbers: normalised position, quaternion) "is fed through an FC layer and
  fused at Res5 (7x7 maps)": its FC embedding (``pose_fc``, ``pose_channels`` outputs, ELU) is tiled over the
  1/32 grid and concatenated to the output of Res5's first residual unit -- the downsampling unit that makes the
  7x7 grid of a 224x224 input -- and a 1x1 conv + BN + ELU (``fuse``) maps the concatenation back to Res5's
  width, before Res5's remaining units (so those keep their ImageNet layout and the fused features still pass
  through residual units of Res5). With one unit per stage (ResNet-10, the CPU presets) the fusion is on Res5's
  output and ``fuse`` feeds the head directly.
* Odometry stream (Sec. III-B, III-C): a Siamese pair of streams; "we do not share weights between the two
  temporal streams". The current frame I_t's stream shares Res1-Res3 with the global stream (hard parameter
  sharing: the very same modules, ``backbone.conv1`` .. ``backbone.layer2``) and has its own Res4
  (``odo_res4``); the previous frame I_{t-1}'s stream has its own Res1-Res4 (``odo_prev``, no Res5). The two
  Res4 outputs (1/16 grid) are concatenated ([I_{t-1}, I_t] along channels, i.e. "truncated before the last
  downsampling stage (Res5)"), then the odometry Res5 (``odo_res5``, its first unit taking twice Res4's
  width) -> GAP -> FC 1024 -> FC 3 and FC 4 (``odo_head``).
* Losses (Sec. III-A, III-B), each stream with learned weights (Kendall & Cipolla):
  L = L_x e^-s_x + s_x + L_q e^-s_q + s_q with Euclidean L_x = ||x - x^||_2, L_q = ||q - q^/||q^|| ||_2.
  The geometric consistency loss adds to the global L_x and L_q the error of the relative motion between
  consecutive global predictions, (x_t - x_{t-1}, q_{t-1}^-1 q_t), against the same quantity of the ground
  truth (:func:`localization.apr.losses.consecutive_motion_errors`; needs T >= 3 frames per window). The
  odometry stream regresses that same relative motion (``odometry_target: world``; the paper writes one
  relative pose for both); ``odometry_target: camera`` (ours, the version before issue 14) regresses the
  camera-frame motion of :func:`localization.apr.pose.relative_pose` instead.
* Training (Sec. IV): alternating optimisation of the two tasks, reported better than joint (18-29 % lower
  error). Here (``optimisation: alternating``) training step n = ``iteration`` + 1 (1-based, as logged)
  optimises, for odd n, the global loss including the geometric consistency terms (global stream, pose
  embedding and fusion, s_x, s_q, and the shared Res1-Res3) and, for even n, the odometry loss (both odometry
  streams, odometry head, its s_x, s_q, and the shared Res1-Res3); the other task's parameters get no gradient
  in that step (Adam then leaves them and their moments untouched). The alternation period (one step) is ours:
  the paper does not give it in the wording we have. ``optimisation: joint`` (ours) sums both losses every step.
  The trainer sets ``model.iteration`` before each step (:mod:`localization.apr.train`), so a restored run
  alternates exactly as an uninterrupted one.

Training windows have T >= 2 frames (``data.steps``; 3 by default): frame k >= 1 gets the ground-truth pose
of frame k-1 as previous pose, with Gaussian noise (ours: keeps the network from copying it), so predictions
cover frames 1..T-1; the odometry stream predicts the motion of each consecutive pair (k-1, k). Options of ours,
off by default: ``prev_mean_prob`` (previous pose replaced by the mean training pose) and ``own_prev_prob``
(scheduled sampling: frame k >= 2 may get the model's own detached prediction of frame k-1). At test time the
previous pose is the previous prediction (:mod:`localization.apr.inference`).

Checkpoints of the layout before issue 14 (odometry on the shared Res3 maps, fusion at Res4) do not load: the
model raises a ``ValueError`` saying so.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from fgsn.utils.config import one_of

from ..losses import consecutive_motion_errors, learned_weighting
from ..pose import pose_difference, qmul, qnormalize, relative_pose
from .base import BaseAPR, pose_metrics
from .heads import PoseHead

_OLD_LAYOUT_KEYS = ("odo_reduce.", "odo_layer3.", "odo_layer4.")


class VLocNet(BaseAPR):
    default_conf = {
        "backbone": {"depth": 50},
        "fc_dim": 1024,  # hidden FC width of both pose heads
        "dropout": 0.2,  # dropout before the pose FCs
        "pose_channels": 64,  # channels of the previous-pose embedding tiled over Res5's (1/32) grid
        "odometry": True,  # train the auxiliary odometry stream
        "odometry_target": "world",  # "world": (x_t - x_{t-1}, q_{t-1}^-1 q_t), the paper's relative motion;
        # "camera" (ours): R_{t-1} (x_t - x_{t-1}), q_t q_{t-1}^-1 (localization.apr.pose.relative_pose)
        "optimisation": "alternating",  # "alternating" (paper): odd steps the global loss, even steps the odometry
        # loss; "joint" (ours): their sum every step
        "geometric_consistency": True,  # add the relative-motion error of consecutive global predictions
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
    conf_checks = {"odometry_target": one_of("world", "camera"), "optimisation": one_of("alternating", "joint")}
    window = 2
    sequential = True

    def _init(self, conf):
        if conf.optimisation not in ("alternating", "joint"):
            raise ValueError(f"optimisation must be 'alternating' or 'joint', got {conf.optimisation!r}")
        if conf.odometry_target not in ("world", "camera"):
            raise ValueError(f"odometry_target must be 'world' or 'camera', got {conf.odometry_target!r}")
        self.backbone = self.make_backbone("elu")  # global stream; its Res1-Res3 are I_t's odometry Res1-Res3
        ch = self.backbone.channels
        self.pose_fc = nn.Linear(7, conf.pose_channels)
        self.fuse = nn.Sequential(nn.Conv2d(ch[4] + conf.pose_channels, ch[4], 1, bias=False), nn.BatchNorm2d(ch[4]),
                                  nn.ELU(inplace=True))
        self.global_head = PoseHead(ch[4], conf.fc_dim, conf.dropout, "elu")
        self.s_x = nn.Parameter(torch.tensor(float(conf.s_x_init)))
        self.s_q = nn.Parameter(torch.tensor(float(conf.s_q_init)))
        if conf.odometry:
            self.odo_prev = self.make_backbone("elu")  # I_{t-1}: own Res1-Res4
            del self.odo_prev.layer4
            self.odo_res4 = self.make_backbone("elu").layer3  # I_t: own Res4 on the shared Res3
            self.odo_res5 = self._stage_on(self.make_backbone("elu").layer4, 2 * ch[3])
            self.odo_head = PoseHead(ch[4], conf.fc_dim, conf.dropout, "elu")
            self.s_x_odo = nn.Parameter(torch.tensor(float(conf.s_x_init)))
            self.s_q_odo = nn.Parameter(torch.tensor(float(conf.s_q_init)))
        self.load_pretrained()
        if conf.odometry and conf.backbone.pretrained:
            self._init_odometry_from_backbone()

    @staticmethod
    def _stage_on(stage: nn.Sequential, in_ch: int) -> nn.Sequential:
        """``stage`` with its first (downsampling) unit rebuilt for ``in_ch`` input channels (He-normal convs)."""
        first = stage[0]
        block = type(first)(in_ch, first.conv1.out_channels, first.conv1.stride[0] * first.conv2.stride[0], 1, "elu")
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        stage[0] = block
        return stage

    @torch.no_grad()
    def _init_odometry_from_backbone(self) -> None:
        """ImageNet start of the odometry streams, copied from the global stream once it has loaded the file:
        I_{t-1}'s Res1-Res4, I_t's Res4 and the odometry Res5, whose convs that see the concatenation
        [I_{t-1}, I_t] get the ImageNet kernel over both halves, halved (ours: the paper does not say how it
        initialises them)."""
        self.odo_prev.load_state_dict({k: v for k, v in self.backbone.state_dict().items()
                                       if not k.startswith("layer4.")})
        self.odo_res4.load_state_dict(self.backbone.layer3.state_dict())
        dst = self.odo_res5.state_dict()
        for k, v in self.backbone.layer4.state_dict().items():
            dst[k] = v if dst[k].shape == v.shape else 0.5 * torch.cat([v, v], 1)
        self.odo_res5.load_state_dict(dst)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """:meth:`torch.nn.Module.load_state_dict`, refusing checkpoints of the layout before issue 14.

        Raises:
            ValueError: the state dict has the old odometry modules or the old (Res4) fusion conv.
        """
        fuse = state_dict.get("fuse.0.weight")
        if any(k.startswith(_OLD_LAYOUT_KEYS) for k in state_dict) or (
                fuse is not None and fuse.shape[0] != self.fuse[0].weight.shape[0]):
            raise ValueError("this is a checkpoint of the old VLocNet layout (odometry on the shared Res3 maps, "
                             "previous pose fused at Res4); the model now follows Valada et al. (issue 14): "
                             "retrain it")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _shared(self, x: torch.Tensor) -> torch.Tensor:
        """Res1-Res3 of the global stream (shared with I_t's odometry stream): (N, 3, H, W) -> (N, C3, H/8, W/8)."""
        return self.backbone(self.normalize_image(x), upto=2)[-1]

    def _global(self, f3: torch.Tensor, prev_p: torch.Tensor, prev_q: torch.Tensor):
        """Global stream from Res3: (N, C3, H/8, W/8) maps, (N, 3) / (N, 4) previous pose -> (N, 3), (N, 4) unit q."""
        res5 = self.backbone.layer4
        h = res5[0](self.backbone.layer3(f3))  # Res4, then Res5's downsampling unit: the 1/32 (7x7 at 224) grid
        emb = F.elu(self.pose_fc(torch.cat([prev_p, prev_q], -1)))
        h = self.fuse(torch.cat([h, emb[:, :, None, None].expand(-1, -1, *h.shape[-2:])], 1))
        p, q = self.global_head(res5[1:](h))
        return p, qnormalize(q)

    def _odometry(self, img_prev: torch.Tensor, f3: torch.Tensor):
        """Odometry stream: (N, 3, H, W) images I_{t-1} and (N, C3, H/8, W/8) shared Res3 maps of I_t ->
        (N, 3) translation and (N, 4) unit quaternion of the motion (``odometry_target``)."""
        g_prev = self.odo_prev(self.normalize_image(img_prev), upto=3)[-1]
        h = torch.cat([g_prev, self.odo_res4(f3)], 1)
        dp, dq = self.odo_head(self.odo_res5(h))
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
        """Scheduled sampling over a training window: frames 1..T-1 (their shared Res3 maps ``f3``, (B, T-1, ...))
        are predicted in order; frame 1 gets the perturbed ground truth of frame 0, frame k >= 2, with probability
        ``own_prev_prob`` (drawn per window and frame), the detached prediction of frame k-1 (no gradient through
        the chain), else the perturbed ground truth of frame k-1."""
        B, Tp = f3.shape[:2]
        ps, qs = [], []
        for j in range(Tp):
            pp, pq = prev_p[:, j], prev_q[:, j]
            if j >= 1:
                own = torch.rand(B, 1, device=f3.device) < self.conf.own_prev_prob
                pp = torch.where(own, ps[-1].detach(), pp)
                pq = torch.where(own, qs[-1].detach(), pq)
            p, q = self._global(f3[:, j], pp, pq)
            ps.append(p)
            qs.append(q)
        return {"position": torch.stack(ps, 1), "qvec": torch.stack(qs, 1)}

    def _forward(self, data):
        """See :mod:`localization.apr.models.base`; also ``prev_position`` (B, T, 3) / ``prev_qvec`` (B, T, 4)
        (inference: the previous pose of every frame) and ``prev_image`` (B, 1, 3, H, W) (the frame before the
        window, for the odometry of its first frame). Returns ``position``, ``qvec`` and, with the odometry
        stream, ``odo_dp`` (B, P, 3) and ``odo_dq`` (B, P, 4) for the P predicted frames that have a previous
        image."""
        image = data["image"]
        B, T = image.shape[:2]
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
        f3 = self._shared(image[:, frames].flatten(0, 1)).unflatten(0, (B, Tp))  # both streams of I_t use these
        if self.training and "prev_position" not in data and self.conf.own_prev_prob > 0 and T >= 3:
            pred = self._global_own_prev(f3, prev_p, prev_q)
        else:
            p, q = self._global(f3.flatten(0, 1), prev_p.reshape(B * Tp, 3), prev_q.reshape(B * Tp, 4))
            pred = {"position": p.view(B, Tp, 3), "qvec": q.view(B, Tp, 4)}
        if self.conf.odometry:
            full = torch.cat([data["prev_image"], image], 1) if "prev_image" in data else image
            off = full.shape[1] - T  # frame k of the window is full[:, k + off]
            idx = [j for j, k in enumerate(frames) if k + off >= 1]
            if idx:
                prev_imgs = full[:, [frames[j] + off - 1 for j in idx]]
                dp, dq = self._odometry(prev_imgs.flatten(0, 1), f3[:, idx].flatten(0, 1))
                pred.update({"odo_dp": dp.view(B, -1, 3), "odo_dq": dq.view(B, -1, 4)})
        return pred

    def task(self) -> str:
        """What the current training step optimises: ``"global"``, ``"odometry"`` or ``"joint"``.

        With ``optimisation: alternating`` and the odometry stream, step n = ``self.iteration`` + 1 optimises the
        global loss for odd n and the odometry loss for even n; without the odometry stream every step is global.
        """
        if not self.conf.odometry:
            return "global"
        if self.conf.optimisation == "joint":
            return "joint"
        return "global" if self.iteration % 2 == 0 else "odometry"

    def loss(self, pred, data):
        """VLocNet's losses (module docstring) of one training window.

        Every term is computed and returned for logging (``global_x``, ``global_q``, ``geo_x``, ``geo_q``,
        ``global``, ``odo_x``, ``odo_q``, ``odometry``); ``total`` is the global loss, the odometry loss or their
        sum, as :meth:`task` says.

        Args:
            pred: :meth:`forward`'s output for the window (``odo_*`` pairs are the window's consecutive frames).
            data: the batch, ``position`` (B, T, 3) normalised, ``qvec`` (B, T, 4).
        """
        Tp = pred["position"].shape[1]
        p, q = data["position"][:, -Tp:], data["qvec"][:, -Tp:]
        L_x = (pred["position"] - p).norm(dim=-1).mean()
        L_q = (pred["qvec"] - q).norm(dim=-1).mean()
        losses = {"global_x": L_x, "global_q": L_q}
        if self.conf.geometric_consistency and Tp >= 2:
            r_x, r_q = consecutive_motion_errors(pred["position"], pred["qvec"], p, q)
            L_x, L_q = L_x + r_x, L_q + r_q
            losses.update({"geo_x": r_x, "geo_q": r_q})
        losses["global"] = learned_weighting(L_x, L_q, self.s_x, self.s_q)
        task = self.task()
        total = losses["global"] if task in ("global", "joint") else None
        if self.conf.odometry and "odo_dp" in pred:
            P, Q = data["position"], data["qvec"]
            motion = pose_difference if self.conf.odometry_target == "world" else relative_pose
            dp, dq = motion(P[:, :-1], Q[:, :-1], P[:, 1:], Q[:, 1:])
            o_x = (pred["odo_dp"] - dp).norm(dim=-1).mean()
            o_q = (pred["odo_dq"] - dq).norm(dim=-1).mean()
            losses.update({"odo_x": o_x, "odo_q": o_q,
                           "odometry": learned_weighting(o_x, o_q, self.s_x_odo, self.s_q_odo)})
            if task in ("odometry", "joint"):
                total = losses["odometry"] if total is None else total + losses["odometry"]
        if total is None:
            raise ValueError("an odometry step (optimisation: alternating) needs the odometry prediction 'odo_dp'")
        metrics = pose_metrics(pred, data, self.pose_scale)
        metrics.update({"s_x": self.s_x.detach(), "s_q": self.s_q.detach()})
        return {"total": total, **losses}, metrics
