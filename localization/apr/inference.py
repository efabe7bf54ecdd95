"""Predicting poses with a trained APR model, and loading models from checkpoints.

Single-image models predict each image independently (batched). Sequential models (``model.sequential``,
VLocNet) are run frame by frame along each sequence in temporal order, each frame receiving the previous
frame's prediction as previous pose; the first frame of a sequence is predicted twice, first from the
mean training pose (centroid and chordal mean rotation, ``model.pose_qvec``), then from its own first
prediction. (Starting from the identity rotation put the first previous pose 90 degrees or more away from
every training pose on the demo street, where cameras look along the road, and the chain never recovered.)
Unreadable images can be skipped and reported instead of aborting the pass (``errors``), so that one corrupt
file costs one query, not its whole sequence.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from .data import DatasetError, PoseStats, load_image
from .models import get_model
from .models.base import BaseAPR

logger = logging.getLogger(__name__)


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[BaseAPR, dict]:
    """Build a model from a ``fgsn-loc train-apr`` checkpoint (weights only, never pickled code).

    Returns:
        model (eval mode, on ``device``) and the checkpoint dict (``config``, ``iteration``, ``metrics``,
        ``pose_stats``, ``map_ids``).
    Raises:
        FileNotFoundError: no file at ``path``. ValueError: not an APR checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"APR checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path}: not an APR checkpoint (needs 'model' and 'config')")
    mconf = OmegaConf.create(ckpt["config"]["model"])
    mconf.backbone.pretrained = None  # the checkpoint has the weights; never read the ImageNet file again
    model = get_model(mconf.name)(mconf)
    model.load_state_dict(ckpt["model"])
    stats = PoseStats.from_dict(ckpt["pose_stats"])
    model.set_pose_stats(stats.mean, stats.scale, stats.qvec)
    return model.to(device).eval(), ckpt


def _preprocess(path: Path, image_size: int, crop_size) -> torch.Tensor:
    """Test-time transform: shorter side to ``image_size``, centre crop ``crop_size`` (h, w) -> (3, h, w)."""
    img = load_image(path, image_size)
    ch, cw = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    h, w = img.shape[:2]
    if h < ch or w < cw:
        import cv2

        s = max(ch / h, cw / w)
        img = cv2.resize(img, (max(cw, round(w * s)), max(ch, round(h * s))))
        h, w = img.shape[:2]
    y, x = (h - ch) // 2, (w - cw) // 2
    return torch.from_numpy(np.ascontiguousarray(img[y:y + ch, x:x + cw])).permute(2, 0, 1).float() / 255.0


@torch.no_grad()
def predict_images(model: BaseAPR, paths: Sequence[Path], sequences: Sequence[str], orders: Sequence[float],
                   image_size: int, crop_size, batch_size: int = 16, progress: bool = True,
                   errors: dict[int, str] | None = None):
    """Predict the poses of images.

    Args:
        model: a model in eval mode with its pose statistics set.
        paths: N image files. sequences, orders: sequence id and temporal order of each image (only used by
            sequential models).
        image_size, crop_size: the test transform of the training configuration.
        errors: None: an unreadable image raises. A dict: unreadable images are skipped and reported in it
            (``errors[i]`` = the reason, naming the file), their output rows are NaN, and a sequential model's
            chain goes on from the last readable frame (as if the frame had not been captured).
    Returns:
        positions: (N, 3) camera centres, metres. qvecs: (N, 4) world-to-camera quaternions (w, x, y, z).
    Raises:
        DatasetError: an image cannot be read and ``errors`` is None.
    """
    model.eval()
    device = model.pose_mean.device
    N = len(paths)
    positions = np.full((N, 3), np.nan)
    qvecs = np.full((N, 4), np.nan)

    def load(i: int) -> torch.Tensor | None:
        try:
            return _preprocess(Path(paths[i]), image_size, crop_size)
        except DatasetError as e:
            if errors is None:
                raise
            errors[i] = str(e)
            logger.warning("Skipping %s", e)
            return None

    if not getattr(model, "sequential", False):
        for s in tqdm(range(0, N, batch_size), desc="APR inference", disable=not progress or N <= batch_size):
            loaded = [(i, load(i)) for i in range(s, min(s + batch_size, N))]
            idx = [i for i, img in loaded if img is not None]
            if not idx:
                continue
            imgs = torch.stack([img for _, img in loaded if img is not None])
            p, q = model.predict({"image": imgs[:, None].to(device)})
            positions[idx], qvecs[idx] = p.cpu().numpy(), q.cpu().numpy()
        return positions, qvecs
    by_seq: dict[str, list[int]] = {}
    for i, s in enumerate(sequences):
        by_seq.setdefault(s, []).append(i)
    with tqdm(total=N, desc="APR inference (sequential)", disable=not progress) as bar:
        for idx in by_seq.values():
            idx = sorted(idx, key=lambda i: orders[i])
            prev_p = torch.zeros(1, 1, 3, device=device)
            prev_q = model.pose_qvec.view(1, 1, 4).clone()
            prev_img = None
            for i in idx:
                bar.update()
                img = load(i)
                if img is None:
                    continue
                img = img[None, None].to(device)
                for _ in range(2 if prev_img is None else 1):
                    data = {"image": img, "prev_position": prev_p, "prev_qvec": prev_q}
                    if prev_img is not None:
                        data["prev_image"] = prev_img
                    pred = model(data)
                    p_norm, q = pred["position"][:, -1:], pred["qvec"][:, -1:]
                    if prev_img is None:
                        prev_p, prev_q = p_norm, q
                prev_p, prev_q, prev_img = p_norm, q, img
                positions[i] = model.denormalize(p_norm[0, 0]).cpu().numpy()
                qvecs[i] = q[0, 0].cpu().numpy()
    return positions, qvecs
