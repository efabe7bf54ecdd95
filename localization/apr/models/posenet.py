"""PoseNet (Kendall et al., ICCV 2015) with the original weighted loss or the geometric loss of Ward et al.

Deviation from the papers, by design: the backbone is a ResNet written in this project instead of
GoogLeNet. GoogLeNet's two auxiliary classifiers and final classifier become three pose regressors on the
outputs of ``layer2``, ``layer3`` and ``layer4`` (strides 8, 16, 32): global average pooling -> FC
(``aux_dim`` / ``feat_dim``) -> ReLU -> dropout -> FC 3 (position) and FC 4 (quaternion). The regressors are
weighted by ``alpha`` = (0.3, 0.3, 1) and ``beta`` = (150, 150, 500) as in the papers; at test time only the
last regressor is used.

Loss (docs/ALGORITHMS.md section 11, shared docs), summed over the three regressors i:
    * ``original`` (Kendall et al.): alpha_i ||p_i - p|| + beta_i ||q_i/||q_i|| - q||.
    * ``geometric`` (Ward et al.): 1.5 beta_i ||q_i - q|| + ||d|| + ||d||^2 s, with d the error of the look-at
      point and s = 1 - cos(a^, d), see :func:`localization.apr.losses.geometric_loss`. alpha appears only in
      the original loss; ``geometric_alpha: true`` multiplies each regressor's geometric loss by alpha_i as
      well (the auxiliary regressors' down-weighting of the original loss) **(ours)**, off by default.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from fgsn.utils.config import one_of

from ..losses import geometric_loss, posenet_loss
from ..pose import qnormalize
from .base import BaseAPR, flatten_frames, pose_metrics
from .heads import PoseHead


class PoseNet(BaseAPR):
    default_conf = {
        "loss": "original",  # "original" (PoseNet) or "geometric" (Ward et al.)
        "alpha": [0.3, 0.3, 1.0],  # position weights of the regressors on layer2, layer3, layer4
        "beta": [150.0, 150.0, 500.0],  # orientation weights (PoseNet outdoor setting)
        "lookat_distance_m": 1.0,  # geometric loss: look-at point distance along the optical axis, metres
        "geometric_alpha": False,  # geometric loss: multiply regressor i's loss by alpha_i (ours; not in the paper)
        "feat_dim": 2048,  # hidden FC width of the main regressor
        "aux_dim": 1024,  # hidden FC width of the two auxiliary regressors
        "dropout": 0.5,  # dropout before the pose FCs (GoogLeNet PoseNet: 0.7 aux / 0.4 main)
    }
    conf_checks = {"loss": one_of("original", "geometric")}  # fgsn.utils.config.check_conf, at merge time

    def _init(self, conf):
        if conf.loss not in ("original", "geometric"):
            raise ValueError(f"PoseNet loss must be 'original' or 'geometric', got {conf.loss!r}")
        if len(conf.alpha) != 3 or len(conf.beta) != 3:
            raise ValueError("PoseNet alpha and beta need 3 values (two auxiliary regressors and the main one)")
        self.backbone = self.make_backbone()
        ch = self.backbone.channels
        self.heads = nn.ModuleList([PoseHead(ch[2], conf.aux_dim, conf.dropout),
                                    PoseHead(ch[3], conf.aux_dim, conf.dropout),
                                    PoseHead(ch[4], conf.feat_dim, conf.dropout)])
        self.load_pretrained()

    def _forward(self, data):
        B, T = data["image"].shape[:2]
        feats = self.backbone(self.normalize_image(flatten_frames(data["image"])))
        outs = [head(f) for head, f in zip(self.heads, feats[2:5])]
        positions = [p.view(B, T, 3) for p, _ in outs]
        quats = [q.view(B, T, 4) for _, q in outs]
        return {"position": positions[-1], "qvec": qnormalize(quats[-1]),
                "positions_all": torch.stack(positions, 0), "qvecs_raw_all": torch.stack(quats, 0)}

    def loss(self, pred, data):
        conf = self.conf
        terms = []
        for i in range(3):
            p_hat, q_hat = pred["positions_all"][i], pred["qvecs_raw_all"][i]
            if conf.loss == "original":
                terms.append(posenet_loss(p_hat, q_hat, data["position"], data["qvec"], conf.alpha[i], conf.beta[i]))
            else:
                dist = conf.lookat_distance_m / float(self.pose_scale)
                weight = conf.alpha[i] if conf.geometric_alpha else 1.0
                terms.append(weight * geometric_loss(p_hat, q_hat, data["position"], data["qvec"], conf.beta[i], dist))
        total = sum(terms)
        losses = {"total": total, "reg1": terms[0], "reg2": terms[1], "reg3": terms[2]}
        return losses, pose_metrics(pred, data, self.pose_scale)

