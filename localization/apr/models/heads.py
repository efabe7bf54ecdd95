"""The pose regression head shared by the APR models (PoseNet's three regressors, VLocNet's two streams)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class PoseHead(nn.Module):
    """Global average pooling -> FC ``dim`` -> activation -> dropout -> FC 3 (position) and FC 4 (quaternion).

    The quaternion FC's bias starts at the identity rotation (1, 0, 0, 0). Module names (``fc``, ``drop``,
    ``fc_p``, ``fc_q``) are part of the checkpoints' key layout.

    Args:
        in_ch: channels of the input feature map.
        dim: hidden FC width.
        dropout: dropout probability before the pose FCs.
        activation: ``"relu"`` (PoseNet) or ``"elu"`` (VLocNet).
    Raises:
        ValueError: unknown activation.
    """

    def __init__(self, in_ch: int, dim: int, dropout: float, activation: str = "relu"):
        super().__init__()
        if activation not in ("relu", "elu"):
            raise ValueError(f"activation must be 'relu' or 'elu', got {activation!r}")
        self.activation = activation
        self.fc = nn.Linear(in_ch, dim)
        self.drop = nn.Dropout(dropout)
        self.fc_p = nn.Linear(dim, 3)
        self.fc_q = nn.Linear(dim, 4)
        with torch.no_grad():  # start at the identity rotation
            self.fc_q.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            x: (N, in_ch, h, w) feature map.
        Returns:
            position: (N, 3) normalised camera centres. qvec: (N, 4) unnormalised quaternions (w, x, y, z).
        """
        h = self.fc(x.mean((2, 3)))
        h = self.drop(torch.relu(h) if self.activation == "relu" else F.elu(h))
        return self.fc_p(h), self.fc_q(h)
