"""AtLoc+ (Wang et al., AAAI 2020): AtLoc trained on temporal windows with MapNet's relative-pose term.

Samples are windows of ``data.steps`` = 3 frames ``data.skip`` = 10 frames apart (the paper's triplets). The
loss is MapNet's (Brahmbhatt et al., CVPR 2018), as AtLoc+ states (docs/ALGORITHMS.md section 11, shared docs):

    L = sum_i h(p_i, p^_i) + alpha sum_{i != j} h(p_ij, p^_ij),

with h AtLoc's learned-weight L1 loss (||x - x^||_1 e^-beta + beta + ||w - w^||_1 e^-gamma + gamma, w = log q)
and the relative pose p_ij = (x_i - x_j, w_i - w_j) of every pair of frames of the window: world-frame
differences of positions and of log-quaternions, computed from the absolute predictions
(:func:`localization.apr.losses.pairwise_relative_errors`, pairs i < j, which have the same mean as i != j).
The relative term has its own learned beta_r, gamma_r (init 0, -3). The sums are normalised by the window
length: the loss is the paper's L / T = mean_i h_i + alpha (T - 1) mean_{i != j} h_ij, with the absolute errors
averaged over the B T frames and the relative ones over the B T (T - 1) / 2 pairs (h is affine in the errors,
so the mean of h is h of the mean error); ``rel_weight`` is the paper's alpha.

Option **(ours)**, off by default: ``relative: camera`` replaces the pairs by consecutive frames only, with the
camera-frame relative pose of :func:`localization.apr.pose.relative_pose` (dp = R_0 (C_1 - C_0),
dq = q_1 q_0^-1; :func:`localization.apr.losses.relative_errors`), the definition of the code before.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from fgsn.utils.config import one_of

from ..losses import learned_weighting, pairwise_relative_errors, relative_errors
from .atloc import AtLoc
from .base import pose_metrics


class AtLocPlus(AtLoc):
    default_conf = {
        **AtLoc.default_conf,
        "rel_weight": 1.0,  # alpha: weight of the relative-pose term (the paper's, see the module docstring)
        "rel_beta_init": 0.0,  # initial learned relative-position log-weight
        "rel_gamma_init": -3.0,  # initial learned relative-orientation log-weight
        "relative": "pairs",  # "pairs": MapNet/AtLoc+ (all pairs, world-frame differences of x and log q);
                              # "camera" (ours): consecutive pairs, R_0 (C_1 - C_0) and q_1 q_0^-1
    }
    conf_checks = {"relative": one_of("pairs", "camera")}  # fgsn.utils.config.check_conf, at merge time
    window = 2

    def _init(self, conf):
        if conf.relative not in ("pairs", "camera"):
            raise ValueError(f"AtLoc+ relative must be 'pairs' or 'camera', got {conf.relative!r}")
        super()._init(conf)
        self.s_rx = nn.Parameter(torch.tensor(float(conf.rel_beta_init)), requires_grad=conf.learn_weights)
        self.s_rq = nn.Parameter(torch.tensor(float(conf.rel_gamma_init)), requires_grad=conf.learn_weights)

    def relative_loss(self, pred, data) -> tuple[torch.Tensor, dict]:
        """The relative term, weighted: (scalar, {"rel_p", "rel_q"}: the mean L1 errors over the pairs).

        ``pairs``: rel_weight (T - 1) h(mean errors over all pairs) (the paper's alpha sum_{i != j} h_ij / T);
        ``camera``: rel_weight h(mean errors over consecutive pairs), as the code before.
        """
        if self.conf.relative == "pairs":
            err_p, err_q = pairwise_relative_errors(pred["position"], pred["logq"], data["position"], data["qvec"])
            weight = self.conf.rel_weight * (pred["position"].shape[1] - 1)
        else:
            err_p, err_q = relative_errors(pred["position"], pred["qvec"], data["position"], data["qvec"], "l1")
            weight = self.conf.rel_weight
        return weight * learned_weighting(err_p, err_q, self.s_rx, self.s_rq), {"rel_p": err_p, "rel_q": err_q}

    def loss(self, pred, data):
        abs_total, terms = self.absolute_loss(pred, data)
        rel_total, rel_terms = self.relative_loss(pred, data)
        total = abs_total + rel_total
        metrics = pose_metrics(pred, data, self.pose_scale)
        metrics.update({"s_x": self.s_x.detach(), "s_q": self.s_q.detach()})
        return {"total": total, **terms, **rel_terms}, metrics
