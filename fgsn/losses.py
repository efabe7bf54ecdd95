"""FGSN losses (Larsson et al., ICCV 2019, section 3).

L = L_class + L_corr.

- ``class_loss``: per-pixel cross-entropy of the reference image's cluster labels.
- ``corr_loss``: for correspondences (x_r,i, x_t,i), i = 1..N, with c_i the one-hot cluster label at the reference
  point and d the softmax output, l = -(1/N) sum_i c_i^T [log d(x_r,i) + log d(x_t,i)].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def class_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Mean cross-entropy over the non-ignored pixels.

    Args:
        logits: (B, K, H, W) scores.
        labels: (B, H, W) int64 labels in [0, K) or ``ignore_index``.
    Returns:
        Scalar; 0 (with gradient) when every pixel is ignored.
    """
    if logits.ndim != 4 or labels.shape != (logits.shape[0],) + tuple(logits.shape[2:]):
        raise ValueError(f"Shapes do not match: logits {tuple(logits.shape)}, labels {tuple(labels.shape)}")
    if not (labels != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=ignore_index)


def gather_points(log_probs: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Values of a (K, H, W) map at integer pixel positions.

    Args:
        log_probs: (K, H, W).
        points: (N, 2) pixel coordinates (x, y), rounded to the nearest pixel centre; must lie inside.
    Returns:
        (N, K).
    """
    xy = torch.round(points).long()
    H, W = log_probs.shape[-2:]
    if len(xy) and (xy[:, 0].min() < 0 or xy[:, 1].min() < 0 or xy[:, 0].max() >= W or xy[:, 1].max() >= H):
        raise ValueError("Points outside the map")
    return log_probs[:, xy[:, 1], xy[:, 0]].T


def corr_loss(log_probs_ref: torch.Tensor, log_probs_tgt: torch.Tensor, labels_ref: torch.Tensor) -> torch.Tensor:
    """Correspondence loss on already gathered per-point log-probabilities.

    Args:
        log_probs_ref: (N, K) log softmax at the reference points x_r,i.
        log_probs_tgt: (N, K) log softmax at the target points x_t,i.
        labels_ref: (N,) int64 cluster labels c_i of the reference points.
    Returns:
        Scalar -(1/N) sum_i [log d_r,i(c_i) + log d_t,i(c_i)]; 0 (with gradient) when N = 0.
    """
    if log_probs_ref.shape != log_probs_tgt.shape or labels_ref.shape != log_probs_ref.shape[:1]:
        raise ValueError(f"Shapes do not match: {tuple(log_probs_ref.shape)}, {tuple(log_probs_tgt.shape)}, "
                         f"{tuple(labels_ref.shape)}")
    if len(labels_ref) == 0:
        return (log_probs_ref.sum() + log_probs_tgt.sum()) * 0.0
    idx = labels_ref[:, None]
    lr = log_probs_ref.gather(1, idx)[:, 0]
    lt = log_probs_tgt.gather(1, idx)[:, 0]
    return -(lr + lt).mean()
