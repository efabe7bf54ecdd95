"""Loading weights from local files: one documented key mapping per published layout.

Layouts
-------
``native``: this project's own checkpoints (``{"model": state_dict, "config": ...}``), keys as in
``fgsn.models.PSPNet``.

``pspnet`` ("Seg" init): the PSPNet of the FGSN / cross-season-segmentation code (Kazuto Nakashima's PyTorch
port of the Caffe PSPNet, modified by M. Larsson; 19 Cityscapes classes). Mapping (``<i>`` = 1, 2, 3;
``<L>`` = 2..5; ``<b>`` = 1..n):

==========================================  ====================================================
cross-season-segmentation key                this project
==========================================  ====================================================
fcn.layer1.conv<i>.conv.weight               backbone.conv<i>.weight
fcn.layer1.conv<i>.bn.*                      backbone.bn<i>.*
fcn.layer<L>.block<b>.reduce.{conv,bn}       backbone.layer<L-1>.<b-1>.{conv1,bn1}
fcn.layer<L>.block<b>.conv3x3.{conv,bn}      backbone.layer<L-1>.<b-1>.{conv2,bn2}
fcn.layer<L>.block<b>.increase.{conv,bn}     backbone.layer<L-1>.<b-1>.{conv3,bn3}
fcn.layer<L>.block<b>.proj.{conv,bn}         backbone.layer<L-1>.<b-1>.downsample.{0,1}
ppm.stages.<s>.conv.{conv,bn}                ppm.stages.<t>.{conv,bn}   (t: position of the same bin)
final.conv5_4.conv.weight                    conv5_4.weight  (input channel blocks reordered)
final.conv5_4.bn.*                           bn5_4.*
conv6.{weight,bias}                          conv6.{weight,bias}
aux.conv4_aux.conv.weight / .bn.*            aux_conv.weight / aux_bn.*
conv6_1.{weight,bias}                        aux_cls.{weight,bias}
==========================================  ====================================================

That code's pyramid order is ``pspnet_bins`` = (6, 3, 2, 1) and it concatenates [input, 6, 3, 2, 1]; the
mapping permutes the stages and the matching 512-channel input blocks of ``conv5_4`` to this network's
``bins`` order. A ``module.`` prefix (DataParallel) and a ``state_dict`` / ``model`` wrapper are removed.

``torchvision`` ("Class" init): an ImageNet ResNet in the torchvision key layout (``conv1``, ``bn1``,
``layer1.0.conv1``, ..., ``layer<n>.<b>.downsample.{0,1}``, ``fc``), or its deep-stem variant (extra ``conv2``,
``bn2``, ``conv3``, ``bn3``, as the PSPNet/"deep-base" ImageNet ResNets). Mapping: ``<key>`` ->
``backbone.<key>``; ``fc.*`` (the ImageNet classifier) is dropped. Plain torchvision weights have a 7x7
``conv1`` and 64-channel ``layer1`` inputs: those tensors do not fit the deep stem and are reported as
shape mismatches (the stem and the first block's input convs then keep their random initialisation). The PSPNet
head is never in such a file and is expected to be missing.

Reporting: every key of the file that maps to nothing, every network key that receives nothing (beyond what
the layout cannot provide) and every shape mismatch is logged as a warning; with ``strict`` they raise a
``KeyError``. Nothing is silently ignored.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

PSPNET_BINS = (6, 3, 2, 1)


@dataclass
class LoadReport:
    """What happened to each key while loading a state dict."""

    layout: str
    loaded: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # file keys that map to no network key
    missing: list[str] = field(default_factory=list)  # network keys left untouched (beyond the allowed ones)
    allowed_missing: list[str] = field(default_factory=list)  # network keys the layout cannot provide
    mismatched: list[str] = field(default_factory=list)  # "key: file shape vs network shape"

    @property
    def ok(self) -> bool:
        return not (self.unexpected or self.missing or self.mismatched)

    def summary(self) -> str:
        parts = [f"layout={self.layout}", f"loaded={len(self.loaded)}"]
        for name in ("unexpected", "missing", "mismatched"):
            keys = getattr(self, name)
            if keys:
                parts.append(f"{name}={len(keys)} {keys[:8]}{' ...' if len(keys) > 8 else ''}")
        if self.allowed_missing:
            parts.append(f"not in this layout (kept initialised)={len(self.allowed_missing)}")
        return ", ".join(parts)


def load_state_dict_file(path: str | Path, map_location="cpu"):
    """``torch.load(path, weights_only=True)``. Raises FileNotFoundError if the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def _unwrap(ckpt) -> dict:
    """The state dict of a checkpoint: ``model`` / ``state_dict`` wrappers and a ``module.`` prefix removed.

    Raises:
        ValueError: what is left is not a dict of tensors.
    """
    sd = ckpt
    for key in ("model", "state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError("expected a state dict of tensors (optionally under 'model' or 'state_dict')")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    return sd


def detect_layout(ckpt) -> str:
    """Guess the layout of a checkpoint: ``native``, ``pspnet`` or ``torchvision``.

    Raises:
        ValueError: no known layout matches.
    """
    sd = _unwrap(ckpt)
    keys = list(sd)
    if any(k.startswith("backbone.") for k in keys):
        return "native"
    if any(k.startswith("fcn.") for k in keys):
        return "pspnet"
    if any(k.startswith("layer1.0.") for k in keys):
        return "torchvision"
    raise ValueError(f"Unknown checkpoint layout (first keys: {keys[:5]})")


def map_pspnet_keys(sd: dict, bins=(1, 2, 3, 6), pspnet_bins=PSPNET_BINS) -> tuple[dict, list[str]]:
    """Map a cross-season-segmentation PSPNet state dict to this project's keys (see module docstring).

    Args:
        sd: the checkpoint's state dict.
        bins: this network's pyramid bins (its concatenation order).
        pspnet_bins: the checkpoint's pyramid bins, in its concatenation order.
    Returns:
        The mapped state dict and the list of source keys that map to nothing.
    Raises:
        ValueError: the two bin sets differ.
    """
    if sorted(bins) != sorted(pspnet_bins):
        raise ValueError(f"Pyramid bins differ: network {list(bins)} vs checkpoint {list(pspnet_bins)}")
    stage_map = {s: list(bins).index(b) for s, b in enumerate(pspnet_bins)}
    sub = {"reduce": ("conv1", "bn1"), "conv3x3": ("conv2", "bn2"), "increase": ("conv3", "bn3"),
           "proj": ("downsample.0", "downsample.1")}
    out, unknown = {}, []
    for k, v in sd.items():
        m = re.fullmatch(r"fcn\.layer1\.conv(\d)\.(conv|bn)\.(\w+)", k)
        if m:
            i, kind, p = m.groups()
            out[f"backbone.{'conv' if kind == 'conv' else 'bn'}{i}.{p}"] = v
            continue
        m = re.fullmatch(r"fcn\.layer(\d)\.block(\d+)\.(reduce|conv3x3|increase|proj)\.(conv|bn)\.(\w+)", k)
        if m:
            L, b, part, kind, p = m.groups()
            name = sub[part][0 if kind == "conv" else 1]
            out[f"backbone.layer{int(L) - 1}.{int(b) - 1}.{name}.{p}"] = v
            continue
        m = re.fullmatch(r"ppm\.stages\.(\d+)\.conv\.(conv|bn)\.(\w+)", k)
        if m and int(m.group(1)) in stage_map:
            s, kind, p = m.groups()
            out[f"ppm.stages.{stage_map[int(s)]}.{kind}.{p}"] = v
            continue
        if k == "final.conv5_4.conv.weight":
            c_in = v.shape[1]
            n = len(pspnet_bins)
            base = c_in // 2  # [input (C), n blocks of C / n]
            blk = base // n
            src_blocks = {b: v[:, base + s * blk: base + (s + 1) * blk] for s, b in enumerate(pspnet_bins)}
            out["conv5_4.weight"] = torch.cat([v[:, :base]] + [src_blocks[b] for b in bins], 1)
            continue
        m = re.fullmatch(r"final\.conv5_4\.bn\.(\w+)", k)
        if m:
            out[f"bn5_4.{m.group(1)}"] = v
            continue
        m = re.fullmatch(r"conv6\.(weight|bias)", k)
        if m:
            out[k] = v
            continue
        m = re.fullmatch(r"aux\.conv4_aux\.(conv|bn)\.(\w+)", k)
        if m:
            out[f"aux_{m.group(1)}.{m.group(2)}"] = v
            continue
        m = re.fullmatch(r"conv6_1\.(weight|bias)", k)
        if m:
            out[f"aux_cls.{m.group(1)}"] = v
            continue
        unknown.append(k)
    return out, unknown


def map_torchvision_keys(sd: dict, prefix: str = "backbone.") -> tuple[dict, list[str]]:
    """Map a torchvision-layout ImageNet ResNet state dict to ``<prefix>*`` keys; ``fc.*`` is dropped.

    Args:
        sd: ResNet state dict (plain or deep stem), keys as ``conv1.weight``, ``layer1.0.bn2.bias``, ...
        prefix: key prefix of the ResNet inside the target network.
    Returns:
        The mapped state dict and the list of source keys that map to nothing (never ``fc.*``).
    """
    out, unknown = {}, []
    for k, v in sd.items():
        if k.startswith("fc."):
            continue
        if re.fullmatch(r"(conv[123]|bn[123])\.\w+|layer[1-4]\.\d+\.(conv[123]|bn[123]|downsample\.[01])\.\w+", k):
            out[prefix + k] = v
        else:
            unknown.append(k)
    return out, unknown


def load_resnet_weights(model: torch.nn.Module, ckpt, prefix: str = "backbone.", strict: bool = False) -> LoadReport:
    """Load ImageNet ResNet weights in the ``torchvision`` layout (module docstring) into the
    ``fgsn.models.ResNet`` found under ``prefix`` in ``model`` (any network: PSPNet, the APR models).

    Network keys outside ``prefix`` cannot be in such a file and are reported as ``allowed_missing``;
    file keys that are not ResNet keys as ``unexpected``; tensors whose shapes do not fit (e.g. a
    ``base_width`` other than 64, or a plain stem into a deep one) as ``mismatched`` and not loaded.

    Args:
        model: the network.
        ckpt: a local file path (``torch.load(weights_only=True)``; never downloads) or an already loaded
            state dict / checkpoint dict.
        prefix: key prefix of the ResNet inside ``model`` (``""`` for a bare ResNet).
        strict: raise ``KeyError`` when the report is not clean.
    Returns:
        The report (also logged).
    Raises:
        FileNotFoundError: no file at ``ckpt``. ValueError: the file holds no state dict of tensors.
    """
    if isinstance(ckpt, (str, Path)):
        ckpt = load_state_dict_file(ckpt)
    mapped, unknown = map_torchvision_keys(_unwrap(ckpt), prefix)
    return _load_mapped(model, mapped, unknown, "torchvision", lambda k: not k.startswith(prefix), strict)


def _load_mapped(model: torch.nn.Module, mapped: dict, unknown: list[str], layout: str, allowed_missing,
                 strict: bool) -> LoadReport:
    """Load the tensors of ``mapped`` (network keys) whose shapes fit and report the rest (module docstring).

    Args:
        allowed_missing: predicate on a network key, True when the layout cannot provide it.
    """
    report = LoadReport(layout, unexpected=list(unknown))
    target = model.state_dict()
    new = {}
    for k, v in mapped.items():
        if k not in target:
            report.unexpected.append(k)
        elif tuple(v.shape) != tuple(target[k].shape):
            report.mismatched.append(f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}")
        else:
            new[k] = v
            report.loaded.append(k)
    for k in target:
        if k in new:
            continue
        if allowed_missing(k) or (k.endswith("num_batches_tracked") and layout != "native"):
            report.allowed_missing.append(k)
        elif not any(m.startswith(k + ":") for m in report.mismatched):
            report.missing.append(k)
    model.load_state_dict(new, strict=False)
    msg = f"Loaded weights: {report.summary()}"
    if report.ok:
        logger.info(msg)
    else:
        logger.warning(msg)
        if strict:
            raise KeyError(f"Checkpoint does not match the network ({msg}); pass strict=False to load anyway")
    return report


def load_weights(model: torch.nn.Module, ckpt, layout: str = "auto", strict: bool = True,
                 skip_classifier: bool = False) -> LoadReport:
    """Load a checkpoint (any supported layout) into a ``PSPNet``.

    Args:
        model: the network (``fgsn.models.PSPNet``).
        ckpt: a state dict or a checkpoint dict as returned by ``torch.load``.
        layout: ``auto`` (see ``detect_layout``), ``native``, ``pspnet`` or ``torchvision``.
        strict: raise ``KeyError`` when the report is not clean.
        skip_classifier: do not load ``conv6`` / ``aux_cls`` (another K; they are re-initialised anyway).
    Returns:
        The report (also logged).
    """
    if layout == "auto":
        layout = detect_layout(ckpt)
    sd = _unwrap(ckpt)
    if layout == "native":
        mapped, unknown = dict(sd), []
        allowed_prefixes: tuple[str, ...] = ()
    elif layout == "pspnet":
        mapped, unknown = map_pspnet_keys(sd, bins=model.conf.bins)
        allowed_prefixes = ()
    elif layout == "torchvision":
        mapped, unknown = map_torchvision_keys(sd)
        allowed_prefixes = ("ppm.", "conv5_4.", "bn5_4.", "conv6.", "aux_")
    else:
        raise ValueError(f"Unknown layout {layout!r}")
    if skip_classifier:
        mapped = {k: v for k, v in mapped.items() if not k.startswith(("conv6.", "aux_cls."))}
        allowed_prefixes = allowed_prefixes + ("conv6.", "aux_cls.")
    return _load_mapped(model, mapped, unknown, layout, lambda k: k.startswith(allowed_prefixes), strict)
