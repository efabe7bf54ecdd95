"""AtLoc+ (Wang et al., AAAI 2020): AtLoc trained on temporal windows with a relative-pose term (as MapNet).

Samples are windows of ``data.steps`` = 3 frames ``data.skip`` = 10 frames apart. Loss:
L_abs (AtLoc's loss on every frame) + alpha (||dp - dp^||_1 e^-beta_r + beta_r + ||log dq - log dq^||_1
e^-gamma_r + gamma_r) over consecutive frame pairs, with the relative pose of
:func:`localization.apr.pose.relative_pose` computed from the absolute predictions and learned beta_r, gamma_r
(init 0, -3).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..losses import learned_weighting, relative_errors
from .atloc import AtLoc
from .base import pose_metrics


class AtLocPlus(AtLoc):
    default_conf = {
        **AtLoc.default_conf,
        "rel_weight": 1.0,  # alpha: weight of the relative-pose term
        "rel_beta_init": 0.0,  # initial learned relative-position log-weight
        "rel_gamma_init": -3.0,  # initial learned relative-orientation log-weight
    }
    window = 2

    def _init(self, conf):
        super()._init(conf)
        self.s_rx = nn.Parameter(torch.tensor(float(conf.rel_beta_init)), requires_grad=conf.learn_weights)
        self.s_rq = nn.Parameter(torch.tensor(float(conf.rel_gamma_init)), requires_grad=conf.learn_weights)

    def loss(self, pred, data):
        abs_total, terms = self.absolute_loss(pred, data)
        err_p, err_q = relative_errors(pred["position"], pred["qvec"], data["position"], data["qvec"], "l1")
        rel_total = learned_weighting(err_p, err_q, self.s_rx, self.s_rq)
        total = abs_total + self.conf.rel_weight * rel_total
        metrics = pose_metrics(pred, data, self.pose_scale)
        metrics.update({"s_x": self.s_x.detach(), "s_q": self.s_q.detach()})
        return {"total": total, **terms, "rel_p": err_p, "rel_q": err_q}, metrics
