"""Cluster analysis (``fgsn-loc analyze-clusters``).

- Against semantic labels (a CamVid-layout set): the contingency table between the network's labels (FGSN
  clusters) and the semantic classes (void ignored), its normalised mutual information
  NMI = I(U; V) / sqrt(H(U) H(V)) (the FGSN paper's Eq. 4; scikit-learn's average_method='geometric'), and a heatmap PNG
  (rows: clusters sorted by their dominant class; each row normalised to sum 1).
- On correspondence data: the cross-condition label agreement (fraction of correspondences whose two pixels get
  the same label), overall and per target condition, and its Cohen's kappa (``fgsn.train.label_agreement``).

Outputs in ``output_dir``: ``metrics.json``, ``contingency.csv`` (K rows x C columns, pixel counts),
``contingency.png``.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .data.camvid import CAMVID_CLASSES, CamVidDataset
from .data.correspondence import load_samples, split_samples
from .data.image import resize_short_side, scale_points
from .utils.config import DEVICE, between, merge_defaults, one_of
from .utils.io import read_image
from .models import PSPNet
from .segment import predict_scores, resolve_device
from .train import label_agreement

logger = logging.getLogger(__name__)

default_conf = {
    "resize_short": 160,  # shorter side fed to the network, pixels
    "patch": 128,  # sliding-window patch, pixels
    "step": 86,  # sliding-window step, pixels
    "batch_size": 8,  # windows per forward
    "camvid_split": "test",  # split of the semantic set
    "max_images": None,  # limit the number of semantic images; null = all
    "corr_split": "val",  # val, train or all correspondence pairs (split as in training: 70/30, split_seed)
    "split_seed": 0,  # seed of the 70/30 split (must match the training data.split_seed)
    "val_fraction": 0.3,  # validation fraction of that split
    "max_pairs": None,  # limit the number of correspondence pairs; null = all
    "device": "auto",  # auto, cpu or cuda
}
conf_checks = {"resize_short": between(1, integer=True), "patch": between(1, integer=True),
               "step": between(1, integer=True), "batch_size": between(1, integer=True),
               "max_images": between(1, integer=True, optional=True), "corr_split": one_of("val", "train", "all"),
               "val_fraction": between(0, 1, hi_open=True), "max_pairs": between(1, integer=True, optional=True),
               "device": DEVICE}


def contingency_table(clusters: np.ndarray, classes: np.ndarray, k: int, c: int) -> np.ndarray:
    """(k, c) int64 counts of (cluster, class) pairs; entries with class < 0 or >= c are ignored.

    Args:
        clusters: (N,) ints in [0, k). classes: (N,) ints.
    """
    clusters = np.asarray(clusters).ravel().astype(np.int64)
    classes = np.asarray(classes).ravel().astype(np.int64)
    if clusters.shape != classes.shape:
        raise ValueError(f"Shapes differ: {clusters.shape} vs {classes.shape}")
    ok = (classes >= 0) & (classes < c) & (clusters >= 0) & (clusters < k)
    return np.bincount(clusters[ok] * c + classes[ok], minlength=k * c).reshape(k, c)


def nmi_from_contingency(table: np.ndarray) -> float:
    """Normalised mutual information I(U; V) / sqrt(H(U) H(V)) of a contingency table (natural log), the FGSN
    paper's Eq. 4 (Larsson et al., ICCV 2019); one partition with a single cluster (H = 0) gives 0 unless both
    have (then 1).

    Returns 1.0 when both partitions are identical single clusters (H = 0 for both), 0.0 for an empty table.
    """
    t = np.asarray(table, dtype=np.float64)
    n = t.sum()
    if n <= 0:
        return 0.0
    p = t / n
    pu, pv = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / (pu[:, None] * pv[None, :])[nz])).sum())
    hu = float(-(pu[pu > 0] * np.log(pu[pu > 0])).sum())
    hv = float(-(pv[pv > 0] * np.log(pv[pv > 0])).sum())
    if hu == 0 and hv == 0:
        return 1.0
    if hu == 0 or hv == 0:
        return 0.0
    return max(mi, 0.0) / np.sqrt(hu * hv)


def plot_contingency(table: np.ndarray, class_names, path: Path, title: str = "") -> Path:
    """Heatmap of the row-normalised table (clusters sorted by dominant class), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(table, dtype=np.float64)
    used = t.sum(1) > 0
    t = t[used]
    ids = np.flatnonzero(used)
    rows = t / np.maximum(t.sum(1, keepdims=True), 1)
    order = np.lexsort((-rows.max(1), rows.argmax(1)))
    fig, ax = plt.subplots(figsize=(6, max(3, 0.12 * len(order) + 1.5)))
    im = ax.imshow(rows[order], aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)))
    ax.set_xticklabels(class_names, rotation=60, ha="right", fontsize=7)
    if len(order) <= 60:
        ax.set_yticks(range(len(order)))
        ax.set_yticklabels([str(i) for i in ids[order]], fontsize=6)
    ax.set_ylabel("cluster")
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, label="fraction of the cluster's pixels")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@torch.no_grad()
def semantic_analysis(model: PSPNet, camvid_root: str | Path, conf) -> tuple[np.ndarray, float]:
    """Contingency table (K, 11) and NMI of the network's labels vs CamVid classes."""
    data = CamVidDataset(camvid_root, conf.camvid_split, conf.resize_short)
    n = len(data) if not conf.max_images else min(conf.max_images, len(data))
    table = np.zeros((model.num_classes, len(CAMVID_CLASSES)), np.int64)
    for i in tqdm(range(n), desc="semantic", leave=False):
        img, lab = data[i]
        pred = predict_scores(model, img, conf.patch, conf.step, conf.batch_size).argmax(0).cpu().numpy()
        table += contingency_table(pred, lab, model.num_classes, len(CAMVID_CLASSES))
    return table, nmi_from_contingency(table)


@torch.no_grad()
def correspondence_agreement(model: PSPNet, corr_root: str | Path, conf) -> dict:
    """Label agreement on correspondence pairs, overall (with Cohen's kappa) and per target condition."""
    samples = load_samples(corr_root)
    tr, va = split_samples(len(samples), conf.val_fraction, conf.split_seed)
    idx = {"val": va, "train": tr, "all": np.arange(len(samples))}[conf.corr_split]
    if conf.max_pairs:
        idx = idx[:conf.max_pairs]
    need: dict[Path, list] = {}
    for j in idx:
        s = samples[j]
        need.setdefault(s.ref_path, []).append((j, 0, s.pt_ref))
        need.setdefault(s.tgt_path, []).append((j, 1, s.pt_tgt))
    labels: dict = {}
    for path, items in tqdm(need.items(), desc="agreement", leave=False):
        img, s = resize_short_side(read_image(path), conf.resize_short)
        pts = np.concatenate([scale_points(p, s) for _, _, p in items])
        h, w = img.shape[:2]
        pts = np.clip(pts, 0, [w - 1, h - 1])
        out = predict_scores(model, img, conf.patch, conf.step, conf.batch_size, points=pts).argmax(1).cpu().numpy()
        k = 0
        for j, role, p in items:
            labels[(j, role)] = out[k:k + len(p)]
            k += len(p)
    per: dict[str, list[int]] = {}
    both = [np.concatenate([labels[(j, r)] for j in idx]) if len(idx) else np.zeros(0, np.int64) for r in (0, 1)]
    agreement, kappa = label_agreement(*both)
    for j in idx:
        cond = Path(samples[j].tgt_name).parent.name
        a, b = labels[(j, 0)], labels[(j, 1)]
        c = per.setdefault(cond, [0, 0])
        c[0] += int((a == b).sum())
        c[1] += len(a)
    return {"agreement": agreement, "kappa": kappa, "points": len(both[0]),
            "per_condition": {k: v[0] / max(v[1], 1) for k, v in sorted(per.items())}}


def main(conf, checkpoint: str | Path, output_dir: str | Path, camvid_root: str | Path | None = None,
         correspondence_root: str | Path | None = None) -> Path:
    """Analyse a checkpoint; returns ``output_dir / "metrics.json"``."""
    conf = merge_defaults(default_conf, dict(conf or {}), conf_checks, "analysis configuration")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = PSPNet.from_checkpoint(checkpoint).to(resolve_device(conf.device)).eval()
    res: dict = {"checkpoint": str(checkpoint), "num_classes": model.num_classes}
    if camvid_root:
        table, nmi = semantic_analysis(model, camvid_root, conf)
        res["nmi"] = nmi
        res["clusters_used"] = int((table.sum(1) > 0).sum())
        np.savetxt(output_dir / "contingency.csv", table, fmt="%d", delimiter=",", header=",".join(CAMVID_CLASSES))
        plot_contingency(table, CAMVID_CLASSES, output_dir / "contingency.png", f"{checkpoint}  NMI={nmi:.3f}")
        logger.info("NMI vs CamVid classes: %.4f (%d clusters used)", nmi, res["clusters_used"])
    if correspondence_root:
        res["correspondence"] = correspondence_agreement(model, correspondence_root, conf)
        logger.info("Label agreement on %s correspondences: %.4f", conf.corr_split, res["correspondence"]["agreement"])
    out = output_dir / "metrics.json"
    out.write_text(json.dumps(res, indent=2))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="FGSN / PSPNet checkpoint")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--camvid", default=None, help="CamVid-layout folder (NMI, contingency table)")
    parser.add_argument("--correspondence", default=None, help="correspondence folder (label agreement)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. resize_short=160 patch=128 step=86")


def run(args) -> int:
    from .utils.config import merge_config
    from .utils.logging import setup_logging

    setup_logging(Path(args.out) / "log.txt")
    conf = merge_config(default_conf, overrides=args.overrides)
    out = main(conf, args.checkpoint, args.out, args.camvid, args.correspondence)
    print(out.read_text())
    return 0
