"""FGSN training on cross-season correspondences (``fgsn-loc train-fgsn CONFIG [key=value ...]``).

Larsson et al., ICCV 2019: every ``clustering.interval`` iterations (iteration 0 included; only at 0 when
``clustering.recluster`` is false, the paper's best ``*`` variant) the reference images' 512-d ``conv5_4``
features are clustered (``fgsn.clustering``), every reference image gets a label map (nearest centroid per
pixel), and the classifiers are re-initialised N(0, 0.01). Each iteration draws one training pair, crops both
images around their own end of one random correspondence, and minimises
``w_class * L_class + w_corr * L_corr`` (``fgsn.losses``; L_class includes the auxiliary head with weight 0.4)
with SGD (momentum 0.9, weight decay 1e-4, lr 2.5e-5 in the paper, batch 1).

Validation (every ``train.val_interval`` iterations and at the end), on the validation pairs (all, or the first
``val_max_pairs``), with sliding-window inference on the full resized images:

- ``val_loss_corr``: L_corr with the reference labels of the current clustering (model selection, as the paper:
  the lowest over the whole run is saved as ``checkpoints/best.pt``; ``train.best_per_clustering`` **(ours)**
  restarts the selection at each re-clustering, since L_corr values of different clusterings are not the same
  measure);
- ``val_agreement``: cross-condition label agreement, the fraction of correspondences whose two pixels get the
  same label (argmax of the classifier) -- the main metric;
- ``val_labels_used``: number of distinct labels predicted at those points (a collapsed network reaches a high
  agreement with few labels: read the two together).

- ``val_kappa``: Cohen's kappa of the two label sets (agreement corrected for chance; robust to collapse).

After each clustering, ``cluster_agreement`` (and ``val_kappa`` in the same row) is the same agreement for the
nearest-centroid labels of the *current* features. At iteration 0 both describe the untrained-start network:
the ``cluster`` row its k-means labels, and a ``val`` row at iteration 0 (after the classifier
re-initialisation, not eligible for ``best.pt``; ``init_*`` in the checkpoint metrics) its classifier, measured
exactly like every later validation.

Outputs under ``output_dir``: ``config.yaml``, ``log.txt``, ``metrics.csv`` (one row per logged event),
``labels/clusters-iterNNNNNN.h5`` (reference label maps of each clustering; needed to resume),
``checkpoints/{last,best}.pt`` (model, optimizer, config, iteration, metrics, cluster state, the number of
``metrics.csv`` rows). ``--restore`` resumes from ``last.pt``; the data and dropout randomness is seeded per
iteration, so a resumed run repeats an uninterrupted one, also after a kill (every file is written atomically;
the ``metrics.csv`` rows logged after ``last.pt`` are dropped and logged again, so each appears once). Ctrl-C
finishes the current iteration and saves ``last.pt``.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tqdm import tqdm

from .clustering import ClusterState, fit_clusters, sample_positions
from .data.correspondence import CorrespondenceDataset
from .losses import class_loss, corr_loss, gather_points
from .models import PSPNet
from .models.pspnet import upsample
from .segment import predict_scores, resolve_device
from .sliding import image_to_tensor
from .utils.config import DEVICE, add_experiment_arguments, between, merge_defaults, one_of, run_experiment, save_config
from .utils.checkpoint import save_checkpoint
from .utils.interrupt import deferred_interrupt
from .utils.io import atomic_path
from .utils.logging import MetricsCSV, eta, setup_logging
from .weights import load_state_dict_file, load_weights

logger = logging.getLogger(__name__)

default_conf = {
    "experiment": "fgsn",  # name of the output folder under outputs/train-fgsn/
    "seed": 0,  # seeds data sampling, dropout, k-means
    "model": {**PSPNet.default_conf},  # network; model.num_classes is K
    "init": {
        "checkpoint": None,  # local weights file; null = random initialisation
        "layout": "auto",  # auto, native (this project), pspnet ("Seg"), torchvision ("Class")
        "strict": True,  # fail on unknown / missing / mis-shaped keys (classifier excluded)
    },
    "data": {**CorrespondenceDataset.default_conf},
    "clustering": {
        "interval": 10000,  # iterations between clusterings (paper: 10000)
        "recluster": True,  # false: cluster only at iteration 0 (the paper's best '*' variant)
        "samples_per_image": 500,  # features sampled per reference image (half at correspondences)
        "pca_dim": 256,  # PCA output dimension (whitened)
        "niter": 20,  # k-means iterations
        "use_gpu": None,  # faiss GPU k-means; null = when available
    },
    "inference": {
        "patch": 713,  # sliding-window patch, pixels
        "step": 476,  # sliding-window step, pixels
        "batch_size": 4,  # windows per forward
    },
    "train": {
        "iterations": 60000,  # total iterations (batch 1 = one image pair)
        "lr": 2.5e-5,  # SGD learning rate
        "lr_schedule": "constant",  # constant or poly (lr * (1 - it / iterations) ** 0.9)
        "momentum": 0.9,  # SGD momentum
        "nesterov": False,  # Nesterov momentum (the authors' code; not the paper)
        "weight_decay": 1e-4,  # L2 weight decay
        "w_class": 1.0,  # weight of L_class (0 = ablation)
        "w_corr": 1.0,  # weight of L_corr (0 = ablation)
        "freeze_bn": False,  # keep BatchNorm in eval mode (sensible with a pre-trained init and batch 1)
        "freeze_ppm_bn": True,  # keep the pyramid-pooling BatchNorms in eval mode (ours; see freeze_batchnorm)
        "log_interval": 50,  # iterations between training-loss rows in metrics.csv
        "val_interval": 1000,  # iterations between validations
        "val_max_pairs": None,  # validate on the first N validation pairs; null = all
        "best_per_clustering": False,  # ours: restart best.pt's selection at each re-clustering (paper: over the run)
        "save_interval": 1000,  # iterations between last.pt saves
        "device": "auto",  # auto, cpu or cuda
        "num_threads": None,  # torch CPU threads; null = torch default
    },
}

_INTERVAL = between(1, integer=True)
_WINDOW = {"patch": between(1, integer=True), "step": between(1, integer=True), "batch_size": between(1, integer=True)}
conf_checks = {  # utils.config.check_conf
    "model": PSPNet.conf_checks,
    "init": {"layout": one_of("auto", "native", "pspnet", "torchvision")},
    "data": CorrespondenceDataset.conf_checks,
    "clustering": {"interval": _INTERVAL, "samples_per_image": between(1, integer=True),
                   "pca_dim": between(1, integer=True), "niter": between(1, integer=True)},
    "inference": _WINDOW,
    "train": {"iterations": between(1, integer=True), "lr": between(0, lo_open=True),
              "lr_schedule": one_of("constant", "poly"), "momentum": between(0, 1, hi_open=True),
              "weight_decay": between(0), "w_class": between(0), "w_corr": between(0), "log_interval": _INTERVAL,
              "val_interval": _INTERVAL, "val_max_pairs": between(1, integer=True, optional=True),
              "save_interval": _INTERVAL, "device": DEVICE, "num_threads": between(1, integer=True, optional=True)},
}

CSV_FIELDS = ["iteration", "event", "loss", "loss_class", "loss_corr", "lr", "val_loss_corr", "val_agreement",
              "val_kappa", "val_labels_used", "val_points", "cluster_agreement", "cluster_empty", "cluster_objective",
              "elapsed_s"]


def _to_tensor(img: np.ndarray, dev) -> torch.Tensor:
    return image_to_tensor(img).to(dev)


def _crop_labels(label_map: np.ndarray, offset: np.ndarray, size: int) -> np.ndarray:
    out = np.full((size, size), -1, dtype=np.int64)
    x0, y0 = offset
    part = label_map[y0:y0 + size, x0:x0 + size]
    out[:part.shape[0], :part.shape[1]] = part
    return out


def _labels_at(label_map: np.ndarray, pts: np.ndarray) -> np.ndarray:
    xy = np.round(pts).astype(np.int64)
    H, W = label_map.shape
    ok = (xy[:, 0] >= 0) & (xy[:, 1] >= 0) & (xy[:, 0] < W) & (xy[:, 1] < H)
    out = np.full(len(xy), -1, dtype=np.int64)
    out[ok] = label_map[xy[ok, 1], xy[ok, 0]]
    return out


def freeze_batchnorm(model: torch.nn.Module) -> None:
    """BatchNorm layers of ``model`` to eval mode (running statistics, not batch statistics).

    Applied to the pyramid-pooling stages alone (``train.freeze_ppm_bn``, ours): with the batch of one training
    pair, the bin-1 stage normalises 2 values per channel, so every channel becomes exactly +-1 and the
    reference and target crops always get opposite global-context codes -- a train / inference mismatch that
    also tells the network which crop is the reference (the one L_class labels), working against L_corr.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


@torch.no_grad()
def compute_clusters(model: PSPNet, data: CorrespondenceDataset, conf, rng: np.random.Generator,
                     labels_path: Path) -> tuple[ClusterState, dict, dict[str, np.ndarray]]:
    """Cluster the reference images' features and write their label maps.

    Args:
        model: the network (switched to eval mode here).
        data: the correspondence dataset (training pairs give the correspondence sampling positions).
        conf: the full training configuration.
        labels_path: HDF5 file to write: one dataset per reference image name, (H, W) uint16 labels at the
            resized resolution.
    Returns:
        cluster state, k-means statistics, {reference name: (H, W) label map}.
    """
    model.eval()
    inf = conf.inference
    refs = data.reference_images()
    corr: dict[str, list[np.ndarray]] = {n: [] for n in refs}
    for i in data.train_idx:
        pr, _ = data.points(i)
        corr[data.samples[i].ref_name].append(pr)
    feats = []
    for name, path in tqdm(refs.items(), desc="features", leave=False):
        img, _ = data.load(path)
        pts = np.concatenate(corr[name]) if corr[name] else np.zeros((0, 2))
        pos = sample_positions(img.shape[:2], pts, conf.clustering.samples_per_image, rng)
        f = predict_scores(model, img, inf.patch, inf.step, inf.batch_size, head=lambda p: p["features"], points=pos)
        feats.append(f.cpu().numpy())
    feats = np.concatenate(feats)
    state, stats = fit_clusters(feats, conf.model.num_classes, conf.clustering.pca_dim, conf.clustering.niter,
                                seed=int(rng.integers(2**31 - 1)), use_gpu=conf.clustering.use_gpu)
    logger.info("k-means on %d features: K=%d, %d empty clusters, objective %.4g", len(feats), state.num_clusters,
                stats["empty"], stats["objective"])
    label_maps = {}
    labels_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(labels_path) as tmp, h5py.File(tmp, "w") as f:
        for name, path in tqdm(refs.items(), desc="labels", leave=False):
            img, _ = data.load(path)
            s = predict_scores(model, img, inf.patch, inf.step, inf.batch_size,
                               head=lambda p: state.scores(p["features"]))
            lab = s.argmax(0).cpu().numpy().astype(np.uint16)
            label_maps[name] = lab
            f.create_dataset(name, data=lab, compression="gzip", compression_opts=4)
    return state, stats, label_maps


def read_label_maps(path: Path) -> dict[str, np.ndarray]:
    """{reference name: (H, W) uint16} from a ``labels/clusters-iter*.h5`` file."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def label_agreement(labels_a: np.ndarray, labels_b: np.ndarray) -> tuple[float, float]:
    """Agreement of two labellings of the same points and its Cohen's kappa.

    Args:
        labels_a, labels_b: (N,) integer labels (e.g. the two ends of N correspondences).
    Returns:
        (p_o, kappa): p_o = fraction of equal labels; kappa = (p_o - p_e) / (1 - p_e) with p_e = sum_k a_k b_k
        the chance agreement of the label frequencies a_k, b_k; kappa = 0 when p_e = 1 (one shared constant
        label) and both are 0 for N = 0.
    """
    a, b = np.asarray(labels_a).ravel(), np.asarray(labels_b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"Label arrays differ in length: {a.shape} vs {b.shape}")
    if len(a) == 0:
        return 0.0, 0.0
    p_o = float(np.mean(a == b))
    ka, ca = np.unique(a, return_counts=True)
    kb, cb = np.unique(b, return_counts=True)
    _, ia, ib = np.intersect1d(ka, kb, return_indices=True)
    p_e = float(np.sum(ca[ia].astype(np.float64) * cb[ib])) / len(a) ** 2
    return p_o, ((p_o - p_e) / (1 - p_e) if p_e < 1 else 0.0)


@torch.no_grad()
def validate(model: PSPNet, data: CorrespondenceDataset, label_maps: dict[str, np.ndarray], conf,
             state: ClusterState | None = None) -> dict:
    """Validation L_corr and label agreement on the validation pairs (see the module docstring).

    Args:
        state: when given, the target labels come from the nearest centroid of the features instead of the
            classifier (``cluster_agreement``), and the reference labels from ``label_maps``.
    Returns:
        dict with ``val_loss_corr`` (nan with ``state``), ``val_agreement``, ``val_kappa`` (Cohen's kappa of the two
        label sets: agreement corrected for the chance agreement of the label frequencies, 0 for a constant
        labelling), ``val_labels_used``, ``val_points``.
    """
    model.eval()
    inf = conf.inference
    idx = list(data.val_idx)
    if conf.train.val_max_pairs:
        idx = idx[:conf.train.val_max_pairs]
    need: dict = {}  # path -> list of (pair position, role, points)
    pairs = []
    for j, i in enumerate(idx):
        s = data.samples[i]
        pr, pt = data.points(i)
        c = _labels_at(label_maps[s.ref_name], pr)
        img_t, _ = data.load(s.tgt_path)
        ok = (c >= 0) & (_labels_at(np.zeros(img_t.shape[:2], np.int64), pt) >= 0)
        pairs.append(c[ok])
        if state is None:
            need.setdefault(s.ref_path, []).append((j, 0, pr[ok]))
        need.setdefault(s.tgt_path, []).append((j, 1, pt[ok]))
    res: dict = {}
    head = (lambda p: p["logits"]) if state is None else (lambda p: state.scores(p["features"]))
    for path, items in tqdm(need.items(), desc="validate", leave=False):
        img, _ = data.load(path)
        pts = np.concatenate([it[2] for it in items])
        if len(pts) == 0:
            continue
        out = predict_scores(model, img, inf.patch, inf.step, inf.batch_size, head=head, points=pts).cpu()
        k = 0
        for j, role, p in items:
            res[(j, role)] = out[k:k + len(p)]
            k += len(p)
    losses, labs_r, labs_t = [], [], []
    for j, c in enumerate(pairs):
        if len(c) == 0:
            continue
        tgt = res[(j, 1)]
        labs_t.append(tgt.argmax(1).numpy())
        if state is None:
            ref = res[(j, 0)]
            labs_r.append(ref.argmax(1).numpy())
            ct = torch.from_numpy(c)
            losses.append(float(corr_loss(F.log_softmax(ref, 1), F.log_softmax(tgt, 1), ct)))
        else:
            labs_r.append(c)
    lab_r = np.concatenate(labs_r) if labs_r else np.zeros(0, np.int64)
    lab_t = np.concatenate(labs_t) if labs_t else np.zeros(0, np.int64)
    agree, kappa = label_agreement(lab_r, lab_t)
    return {"val_loss_corr": float(np.mean(losses)) if losses else float("nan"),
            "val_agreement": agree, "val_kappa": kappa,
            "val_labels_used": len(np.union1d(lab_r, lab_t)), "val_points": len(lab_r)}


def _lr(conf, it: int) -> float:
    t = conf.train
    if t.lr_schedule == "poly":
        return t.lr * (1 - it / max(t.iterations, 1)) ** 0.9
    if t.lr_schedule != "constant":
        raise ValueError(f"Unknown lr_schedule {t.lr_schedule!r}")
    return t.lr


def _reset_momentum(optimizer: torch.optim.Optimizer, params) -> None:
    for p in params:
        optimizer.state.pop(p, None)


def _save(path: Path, model, optimizer, conf, it, metrics, state, cluster_it, labels_file, best,
          log: MetricsCSV, running: dict) -> None:
    ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "config": OmegaConf.to_container(conf, resolve=True), "iteration": it, "metrics": metrics,
            "cluster_state": state.state_dict() if state is not None else {}, "cluster_iteration": cluster_it,
            "labels_file": labels_file, "best": best, "log_rows": {log.path.name: log.rows},
            "log_running": running}
    save_checkpoint(ckpt, path)


def main(conf, output_dir: str | Path, restore: bool = False) -> Path:
    """Train an FGSN.

    Args:
        conf: configuration (``default_conf`` merged with YAML and overrides).
        output_dir: experiment folder (created).
        restore: resume from ``output_dir/checkpoints/last.pt``.
    Returns:
        Path of the best checkpoint (lowest validation L_corr).
    """
    conf = merge_defaults(default_conf, conf, conf_checks, "training configuration")
    output_dir = Path(output_dir)
    ckpt_dir = output_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(output_dir / "log.txt")
    save_config(conf, output_dir / "config.yaml")
    if conf.train.num_threads:
        torch.set_num_threads(int(conf.train.num_threads))
    dev = resolve_device(conf.train.device)
    t = conf.train

    data = CorrespondenceDataset(conf.data)
    torch.manual_seed(conf.seed)  # the random initialisation
    model = PSPNet(conf.model)
    if conf.init.checkpoint:
        load_weights(model, load_state_dict_file(conf.init.checkpoint), layout=conf.init.layout,
                     strict=conf.init.strict, skip_classifier=True)
    model.to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                                nesterov=t.nesterov)
    it, state, cluster_it, labels_file, label_maps = 0, None, -1, None, None
    best = {"val_loss_corr": float("inf"), "iteration": -1}
    metrics: dict = {}
    running: dict[str, list[float]] = {}  # training losses since the last logged row
    last = ckpt_dir / "last.pt"
    log = MetricsCSV(output_dir / "metrics.csv", CSV_FIELDS)
    if restore and last.exists():
        ck = torch.load(last, map_location=dev, weights_only=True)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        it, cluster_it, labels_file, best, metrics = (ck["iteration"], ck["cluster_iteration"], ck["labels_file"],
                                                      ck["best"], ck["metrics"])
        if ck["cluster_state"]:
            state = ClusterState.from_state_dict(ck["cluster_state"])
            label_maps = read_label_maps(output_dir / labels_file)
        if "log_rows" in ck:  # rows logged after the checkpoint are logged again from here
            log.truncate(ck["log_rows"][log.path.name])
            running = {k: list(v) for k, v in ck["log_running"].items()}
        logger.info("Restored %s at iteration %d", last, it)
    else:
        if restore:
            logger.warning("--restore: no checkpoint at %s, starting from scratch", last)
        log.truncate(0)  # a run from scratch starts its log afresh (also after a kill before the first checkpoint)
    t0 = time.time()

    def do_validate(i: int, keep_best: bool = True) -> dict:
        nonlocal best
        m = validate(model, data, label_maps, conf)
        m["iteration"] = i
        log.write({**m, "event": "val", "elapsed_s": round(time.time() - t0, 1)})
        logger.info("[it %d] val L_corr %.4f, agreement %.4f, kappa %.4f (%d labels used, %d points)", i,
                    m["val_loss_corr"], m["val_agreement"], m["val_kappa"], m["val_labels_used"], m["val_points"])
        if keep_best and m["val_loss_corr"] < best["val_loss_corr"]:
            best = {"val_loss_corr": m["val_loss_corr"], "iteration": i, "val_agreement": m["val_agreement"]}
            _save(ckpt_dir / "best.pt", model, optimizer, conf, i, m, state, cluster_it, labels_file, best, log,
                  running)
        return m

    it_start = it  # this process's first iteration (a resumed run's rate is its own)
    try:
        while it < t.iterations:
            due = state is None or (conf.clustering.recluster and it % conf.clustering.interval == 0
                                    and cluster_it != it)
            if due:
                labels_file = f"labels/clusters-iter{it:06d}.h5"
                state, stats, label_maps = compute_clusters(model, data, conf, np.random.default_rng([conf.seed, it, 1]),
                                                            output_dir / labels_file)
                cm = validate(model, data, label_maps, conf, state=state)
                log.write({"iteration": it, "event": "cluster", "cluster_agreement": cm["val_agreement"],
                           "val_kappa": cm["val_kappa"],
                           "cluster_empty": stats["empty"], "cluster_objective": stats["objective"],
                           "val_labels_used": cm["val_labels_used"], "val_points": cm["val_points"],
                           "elapsed_s": round(time.time() - t0, 1)})
                logger.info("[it %d] clustering: agreement of the nearest-centroid labels %.4f (%d labels used)",
                            it, cm["val_agreement"], cm["val_labels_used"])
                metrics[f"cluster_agreement_it{it}"] = cm["val_agreement"]
                torch.manual_seed(conf.seed * 1000003 + it + 1)
                model.reset_classifier(conf.model.num_classes)
                _reset_momentum(optimizer, model.classifier_parameters())
                cluster_it = it
                if conf.train.best_per_clustering:  # ours: L_corr is measured against the current clustering
                    best = {"val_loss_corr": float("inf"), "iteration": -1}
                if it == 0:  # the untrained-start network's classifier, measured like every later validation
                    metrics.update({f"init_{k}": v for k, v in do_validate(0, keep_best=False).items()
                                    if k != "iteration"})
                # after the iteration-0 validation: a run killed before this save clusters (and validates) again
                _save(last, model, optimizer, conf, it, metrics, state, cluster_it, labels_file, best, log, running)

            rng = np.random.default_rng([conf.seed, it])
            torch.manual_seed(conf.seed * 1000003 + it)
            model.train()
            if t.freeze_bn:
                freeze_batchnorm(model)
            elif t.freeze_ppm_bn:
                freeze_batchnorm(model.ppm)
            lr = _lr(conf, it)
            for g in optimizer.param_groups:
                g["lr"] = lr
            ex = data.sample_crops(int(rng.choice(data.train_idx)), rng)
            size = data.conf.crop_size
            lab = torch.from_numpy(_crop_labels(label_maps[ex["ref_name"]].astype(np.int64), ex["offset_ref"], size))
            x = torch.stack([_to_tensor(ex["image_ref"], dev), _to_tensor(ex["image_tgt"], dev)])
            pred = model({"image": x})
            logits = upsample(pred["logits"], (size, size))
            lab = lab.to(dev)[None]
            l_class = class_loss(logits[:1], lab)
            if "aux_logits" in pred:
                l_class = l_class + conf.model.aux_weight * class_loss(upsample(pred["aux_logits"][:1], (size, size)), lab)
            logp = F.log_softmax(logits, 1)
            # the pixels points_in_crop checked (rounding again after a float32 cast turned 127.49999 into 128)
            pr = torch.as_tensor(ex["px_ref"], dtype=torch.float32)
            pt = torch.as_tensor(ex["px_tgt"], dtype=torch.float32)
            c = lab[0][pr[:, 1].long(), pr[:, 0].long()] if len(pr) else lab.new_zeros(0)
            ok = c >= 0
            l_corr = corr_loss(gather_points(logp[0], pr[ok.cpu()]), gather_points(logp[1], pt[ok.cpu()]), c[ok])
            loss = t.w_class * l_class + t.w_corr * l_corr
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            with deferred_interrupt():  # the update and the counter that records it, whole (Ctrl-C waits)
                optimizer.step()
                it += 1
                for k, v in (("loss", loss), ("loss_class", l_class), ("loss_corr", l_corr)):
                    running.setdefault(k, []).append(float(v.detach()))
            if it % t.log_interval == 0 or it == t.iterations:
                row = {k: float(np.mean(v)) for k, v in running.items()}
                running = {}
                log.write({**row, "iteration": it, "event": "train", "lr": lr, "elapsed_s": round(time.time() - t0, 1)})
                logger.info("[it %d / %d] loss %.4f (class %.4f, corr %.4f), lr %.3g, %s", it, t.iterations,
                            row["loss"], row["loss_class"], row["loss_corr"], lr,
                            eta(time.time() - t0, it - it_start, t.iterations - it_start))  # clustering, validation in
            if it % t.val_interval == 0 or it == t.iterations:
                metrics.update({f"last_{k}": v for k, v in do_validate(it).items() if k != "iteration"})
            if it % t.save_interval == 0 or it == t.iterations:
                _save(last, model, optimizer, conf, it, metrics, state, cluster_it, labels_file, best, log, running)
    except KeyboardInterrupt:
        logger.warning("Interrupted at iteration %d: saving %s", it, last)
        _save(last, model, optimizer, conf, it, metrics, state, cluster_it, labels_file, best, log, running)
        raise
    logger.info("Done: best validation L_corr %.4f at iteration %d", best["val_loss_corr"], best["iteration"])
    return ckpt_dir / "best.pt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_experiment_arguments(parser, "configs/fgsn/cpu.yaml", "outputs/train-fgsn", "model.num_classes=100")


def run(args) -> int:
    return run_experiment(args, default_conf, main, conf_checks)
