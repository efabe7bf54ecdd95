"""Dense FGSN labels for a set of images (``fgsn-loc segment``), resumable like hloc's feature extraction.

HDF5 schema of the output file (``labels-<name>.h5``):

- one group per image, named by the image's path relative to the image folder (``/`` in names makes nested
  groups, like hloc); inside it:
  - ``labels``: (H, W) at the image's own resolution, ``uint8`` when K <= 256 else ``uint16``; the argmax of
    the sliding-window weighted mean of the class scores (FGSN clusters or semantic classes);
  - ``confidence`` (optional): (H, W) ``float16``, softmax probability of the chosen label.
  - attributes: ``num_classes`` (K), ``image_size`` (W, H) original, ``resize_short`` (network resolution).
- file attributes: ``num_classes``, ``checkpoint``, ``patch``, ``step``.

When the network runs at another resolution (``resize_short``), labels and confidences are resampled to the
original size with nearest-neighbour interpolation. Images already in the file are skipped unless
``overwrite``. ``read_labels(path, name)`` reads one label map back.

Kill-safe (:class:`fgsn.utils.io.H5GroupWriter`): each finished image is first written atomically to its own file
in ``<out>.parts/``, and the run ends by adding those to the label file in one atomic replace (also after an
error or Ctrl-C). A run killed at any point leaves the label file as it was and its finished images as parts,
which the next run skips and adds; overlay PNGs are written atomically, before their image's labels.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import cv2
import h5py
import numpy as np
import torch

from .data.image import resize_short_side
from .utils.config import DEVICE, between, merge_defaults
from .utils.io import H5GroupWriter, atomic_path, h5_group_names, read_image
from .utils.logging import progress
from .utils.parallel import Engine, add_engine_arguments, engine_options
from .models import PSPNet
from .sliding import image_to_tensor, sliding_window

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp")

default_conf = {
    "resize_short": 1024,  # shorter image side fed to the network, pixels (paper: 1024); null = unchanged
    "patch": 713,  # sliding-window patch side, pixels
    "step": 476,  # sliding-window stride, pixels
    "batch_size": 4,  # windows per forward pass
    "confidence": False,  # also store the per-pixel softmax confidence
    "device": "auto",  # auto (cuda when present), cpu or cuda
}
conf_checks = {"resize_short": between(1, integer=True, optional=True), "patch": between(1, integer=True),
               "step": between(1, integer=True), "batch_size": between(1, integer=True), "device": DEVICE}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def predict_scores(model: PSPNet, image: np.ndarray, patch: int, step: int, batch_size: int = 4,
                   head=None, points: np.ndarray | None = None) -> torch.Tensor:
    """Sliding-window scores of one image.

    Args:
        model: the network (put in eval mode by the caller).
        image: (H, W, 3) uint8 RGB, already at the network resolution.
        head: maps ``model(...)`` output dict to (B, C, h, w); default: ``logits``.
        points: optional (N, 2) pixel positions (x, y): return only the scores there.
    Returns:
        (C, H, W) scores, or (N, C) at ``points`` (on the model's device).
    """
    dev = next(model.parameters()).device
    head = head or (lambda p: p["logits"])
    x = image_to_tensor(image).to(dev)
    pts = None if points is None else torch.as_tensor(np.asarray(points), dtype=torch.float32, device=dev)
    return sliding_window(lambda w: head(model({"image": w})), x, patch, step, batch_size=batch_size, points=pts)


def list_images(images: str | Path | Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """Resolve ``--images``: a folder (searched recursively), a text file of paths, or a list of paths.

    Returns:
        (paths, names): names are relative to the folder (or to the list file's folder), with ``/``.
    Raises:
        FileNotFoundError: nothing found.
    """
    if isinstance(images, (str, Path)):
        p = Path(images)
        if p.is_dir():
            paths = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS)
            names = [q.relative_to(p).as_posix() for q in paths]
        elif p.is_file():
            lines = [ln.strip().split()[0] for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            paths = [Path(ln) if Path(ln).is_absolute() else p.parent / ln for ln in lines]
            names = lines
        else:
            raise FileNotFoundError(f"No image folder or list at {p}")
    else:
        paths = [Path(q) for q in images]
        names = [q.name for q in paths]
    if not paths:
        raise FileNotFoundError(f"No images found in {images}")
    return paths, names


def _segment(model: PSPNet, path: str | Path, conf, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image -> (H, W) labels, (H, W) float32 confidence at the image's resolution, and the RGB image."""
    img = read_image(path)
    H, W = img.shape[:2]
    net_img, s = resize_short_side(img, conf.resize_short)
    scores = predict_scores(model, net_img, conf.patch, conf.step, conf.batch_size)
    prob, lab = torch.softmax(scores, 0).max(0)
    lab = lab.cpu().numpy().astype(dtype)
    prob = prob.cpu().numpy().astype(np.float32)
    if lab.shape != (H, W):
        lab = cv2.resize(lab.astype(np.uint16), (W, H), interpolation=cv2.INTER_NEAREST).astype(dtype)
        prob = cv2.resize(prob, (W, H), interpolation=cv2.INTER_NEAREST)
    return lab, prob, img


@torch.no_grad()
def _segment_batch(shared, batch: list[tuple[str, str]]) -> list[tuple[str, np.ndarray, np.ndarray, tuple]]:
    """Worker side of :func:`segment_images` on an engine: (name, labels, confidence, image size) per image."""
    model, conf, dtype, threads = shared
    torch.set_num_threads(threads)  # the client's: CPU convolutions sum in an order that depends on the thread count
    model = model.to(resolve_device(conf.device)).eval()
    out = []
    for path, name in batch:
        lab, prob, img = _segment(model, path, conf, dtype)
        out.append((name, lab, prob, (img.shape[1], img.shape[0])))
    return out


def segment_images(model: PSPNet, image_paths: Sequence[str | Path], out_path: str | Path,
                   names: Sequence[str] | None = None, conf=None, overwrite: bool = False,
                   overlay_dir: str | Path | None = None, engine=None, attrs: dict | None = None) -> Path:
    """Segment images into an HDF5 label file (schema in the module docstring); resumable, also after a kill.

    Args:
        model: a ``PSPNet`` (moved to ``conf.device``, set to eval mode).
        image_paths: image files.
        out_path: HDF5 file, created or appended to.
        names: HDF5 names of the images (default: file names).
        conf: overrides of ``default_conf``.
        overwrite: recompute images already in the file.
        overlay_dir: write colourised overlay PNGs there (``<name>.png``; not with a parallel ``engine``).
        engine: segment on its Dask workers (:class:`fgsn.utils.parallel.Engine`; the model is sent once to each
            worker, which runs torch with this process's thread count: CPU results depend on it, at pixels whose
            two best scores tie to float precision, so the labels equal a serial run's); this process alone
            writes each image as its batch completes. None: in this process.
        attrs: more file attributes to set (e.g. ``checkpoint``).
    Returns:
        ``out_path``.
    """
    conf = merge_defaults(default_conf, dict(conf or {}), conf_checks, "segmentation configuration")
    names = [Path(p).name for p in image_paths] if names is None else list(names)
    if len(names) != len(image_paths):
        raise ValueError(f"{len(names)} names for {len(image_paths)} images")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(conf.device)
    model = model.to(dev).eval()
    K = model.num_classes
    dtype = np.uint8 if K <= 256 else np.uint16
    writer = H5GroupWriter(out_path)
    done = set()
    if overwrite:
        writer.discard()
    else:
        done = set(writer.pending()) | h5_group_names(out_path, "labels")  # pending: finished by a killed run
    todo = [(p, n) for p, n in zip(image_paths, names) if n not in done]
    logger.info("Segmenting %d images (%d already in %s)", len(todo), len(names) - len(todo), out_path)
    palette = _palette(K)
    if engine is not None and engine.parallel:
        if overlay_dir is not None:
            raise ValueError("overlay_dir is written by serial segmentation only")
        results = engine.imap(_segment_batch, [(str(p), n) for p, n in todo],
                              (model.cpu(), conf, dtype, torch.get_num_threads()), batch_size=4)
    else:
        results = ((n, *_segment(model, p, conf, dtype)) for p, n in todo)
    try:
        for name, lab, prob, img in progress(results, total=len(todo), desc="segment", unit="img", log=logger):
            H, W = lab.shape
            if overlay_dir is not None:  # before the labels: a resumed run skips the image
                o = Path(overlay_dir) / (name.rsplit(".", 1)[0] + ".png")
                o.parent.mkdir(parents=True, exist_ok=True)
                over = (0.5 * img + 0.5 * palette[lab]).astype(np.uint8)
                with atomic_path(o) as tmp:
                    tmp.write_bytes(cv2.imencode(".png", cv2.cvtColor(over, cv2.COLOR_RGB2BGR))[1].tobytes())
            with writer.group(name) as g:
                g.create_dataset("labels", data=lab, compression="gzip", compression_opts=4)
                if conf.confidence:
                    g.create_dataset("confidence", data=prob.astype(np.float16), compression="gzip",
                                     compression_opts=4)
                g.attrs["num_classes"] = K
                g.attrs["image_size"] = (W, H)
                g.attrs["resize_short"] = -1 if conf.resize_short is None else conf.resize_short
    finally:  # also on an error or Ctrl-C: the images done so far go into the file
        writer.commit({"num_classes": K, "patch": conf.patch, "step": conf.step, **dict(attrs or {})})
    return out_path


def read_labels(h5_path: str | Path, name: str, confidence: bool = False):
    """Read one image's label map.

    Args:
        h5_path: file written by ``segment_images``.
        name: the image's name in the file.
        confidence: also return the (H, W) float32 confidence (raises KeyError if it was not stored).
    Returns:
        (H, W) label array (uint8 / uint16), or (labels, confidence).
    Raises:
        KeyError: the image is not in the file.
    """
    with h5py.File(h5_path, "r") as f:
        if name not in f or "labels" not in f[name]:
            raise KeyError(f"No labels for {name!r} in {h5_path}")
        lab = f[name]["labels"][()]
        if confidence:
            return lab, f[name]["confidence"][()].astype(np.float32)
    return lab


def list_names(h5_path: str | Path) -> list[str]:
    """Names of all images in a label file."""
    if not Path(h5_path).is_file():
        raise FileNotFoundError(f"{h5_path}: label file not found")
    return sorted(h5_group_names(h5_path, "labels"))


def _palette(k: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    return rng.integers(0, 256, (max(k, 1), 3)).astype(np.float32)


def main(conf, checkpoint: str | Path, images, out_path: str | Path, overwrite: bool = False,
         overlay_dir: str | Path | None = None, engine=None) -> Path:
    """Load a checkpoint and segment images (see ``segment_images``; ``engine``: its Dask workers, None: here)."""
    model = PSPNet.from_checkpoint(checkpoint)
    paths, names = list_images(images)
    conf = merge_defaults(default_conf, dict(conf or {}), conf_checks, "segmentation configuration")
    return segment_images(model, paths, out_path, names=names, conf=conf, overwrite=overwrite,
                          overlay_dir=overlay_dir, engine=engine, attrs={"checkpoint": str(checkpoint)})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="FGSN / PSPNet checkpoint (.pt)")
    parser.add_argument("--images", required=True, help="image folder (recursive) or text file listing images")
    parser.add_argument("--out", required=True, help="output HDF5 file, e.g. labels-fgsn-k100.h5")
    parser.add_argument("--overwrite", action="store_true", help="recompute images already in the file")
    parser.add_argument("--overlay-dir", default=None, help="write colourised overlay PNGs to this folder "
                        "(serial runs only)")
    add_engine_arguments(parser)
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the inference config, e.g. resize_short=512")


def run(args) -> int:
    from .utils.config import merge_config
    from .utils.logging import setup_logging

    setup_logging()
    conf = merge_config(default_conf, overrides=args.overrides)
    with Engine(**engine_options(args)) as engine:
        out = main(conf, args.checkpoint, args.images, args.out, overwrite=args.overwrite,
                   overlay_dir=args.overlay_dir, engine=engine)
    print(out)
    return 0
