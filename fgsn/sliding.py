"""Sliding-window inference (FGSN / PSPNet: Zhao et al., CVPR 2017; Larsson et al., ICCV 2019, Sec. 4).

Patches of ``patch`` x ``patch`` pixels with ``step`` pixels between windows in both directions; the last window
in each direction is flush with the image border. Each window's output is weighted by the paper's map (Sec. 4):
1 on the central ``center`` x ``center`` square (236 for 713-pixel patches) and falling linearly to 0 at the patch
edges, a continuous function evaluated at the pixel centres (so the edge pixels keep a small positive weight and
every pixel is covered); per pixel the weighted mean over the windows is taken. Images smaller than a patch are
padded (bottom/right) with the mean colour.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .models.pspnet import RGB_MEAN


def window_starts(size: int, patch: int, step: int) -> list[int]:
    """Start offsets of windows along one axis; the last window ends at ``max(size, patch)``.

    Raises:
        ValueError: non-positive step or patch.
    """
    if step <= 0 or patch <= 0:
        raise ValueError(f"patch and step must be positive, got {patch}, {step}")
    if size <= patch:
        return [0]
    starts = list(range(0, size - patch + 1, step))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def window_weights(patch: int, center: int) -> torch.Tensor:
    """(patch, patch) weights: 1 on the central ``center`` x ``center`` square, linear to 0 at the patch edges
    (Larsson et al., ICCV 2019, Sec. 4).

    In continuous coordinates x in [0, patch] (pixel i covers [i, i + 1]) the 1-D weight is
    min(1, min(x, patch - x) / m) with m = (patch - center) / 2, sampled at the pixel centres x = i + 0.5; the 2-D
    weight is the minimum of the row and column weights. 713 / 236: m = 238.5, weight 1 from pixel 238 to 474,
    0.5 / 238.5 on the edge pixels.
    """
    m = max((patch - center) / 2, 0.5)
    x = torch.arange(patch, dtype=torch.float64) + 0.5
    w = torch.clamp(torch.minimum(x, patch - x) / m, max=1.0).float()
    return torch.minimum(w[:, None], w[None, :])


@torch.no_grad()
def sliding_window(fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, patch: int, step: int,
                   center: int | None = None, batch_size: int = 4, points: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """Weighted sliding-window evaluation of a dense predictor.

    Args:
        fn: maps (B, 3, patch, patch) RGB 0-255 windows to (B, C, h, w) outputs at any stride; they are resampled
            bilinearly (align_corners=True) to the window size.
        image: (3, H, W) RGB 0-255 float.
        patch: window side, pixels. step: window stride, pixels. center: side of the full-weight centre
            (default: the paper's proportion, ``round(patch * 236 / 713)``: 236 for 713-pixel patches).
        batch_size: windows per call of ``fn``.
        points: optional (N, 2) pixel positions (x, y); then only the outputs at these points are returned.
    Returns:
        (C, H, W) weighted mean outputs, or (N, C) at ``points``.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"Expected a (3, H, W) image, got {tuple(image.shape)}")
    if center is None:
        center = max(round(patch * 236 / 713), 1)
    _, H, W = image.shape
    Hp, Wp = max(H, patch), max(W, patch)
    if (Hp, Wp) != (H, W):
        pad = torch.tensor(RGB_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1).expand(3, Hp, Wp).clone()
        pad[:, :H, :W] = image
        image = pad
    wmap = window_weights(patch, center).to(image.device)
    boxes = [(y, x) for y in window_starts(Hp, patch, step) for x in window_starts(Wp, patch, step)]
    acc = wsum = None
    if points is not None:
        points = points.to(image.device, torch.float32)
    for b in range(0, len(boxes), batch_size):
        chunk = boxes[b:b + batch_size]
        out = fn(torch.stack([image[:, y:y + patch, x:x + patch] for y, x in chunk]))
        C = out.shape[1]
        if points is None:
            out = F.interpolate(out.float(), (patch, patch), mode="bilinear", align_corners=True)
            if acc is None:
                acc = torch.zeros(C, Hp, Wp, device=image.device)
                wsum = torch.zeros(Hp, Wp, device=image.device)
            for (y, x), o in zip(chunk, out):
                acc[:, y:y + patch, x:x + patch] += o * wmap
                wsum[y:y + patch, x:x + patch] += wmap
        else:
            if acc is None:
                acc = torch.zeros(len(points), C, device=image.device)
                wsum = torch.zeros(len(points), device=image.device)
            for (y, x), o in zip(chunk, out):
                local = points - torch.tensor([x, y], device=image.device, dtype=torch.float32)
                inside = ((local >= 0) & (local <= patch - 1)).all(1)
                if not inside.any():
                    continue
                lp = local[inside]
                grid = (lp / (patch - 1) * 2 - 1).view(1, 1, -1, 2)
                val = F.grid_sample(o[None].float(), grid, mode="bilinear", align_corners=True)[0, :, 0].T
                ij = torch.round(lp).long()
                w = wmap[ij[:, 1], ij[:, 0]]
                acc[inside] += val * w[:, None]
                wsum[inside] += w
    if points is None:
        return (acc / wsum)[:, :H, :W]
    return acc / wsum.clamp(min=1e-12)[:, None]


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 0-255."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
