"""Sliding-window FGSN inference throughput (images/s) vs a naive full-image forward, in the same run.

The naive forward runs the whole (resized) image through the network once and upsamples the logits; the
sliding window (``fgsn.sliding``) runs overlapping patches and blends them. The ratio is the price of the
paper's inference protocol at this patch / step. Defaults are the CPU preset (ResNet-18, 160-pixel short side,
patch 128, step 86); ``--paper`` uses ResNet-101, 1024 short side, 713 / 476 (GPU advisable).

Usage: python benchmarks/bench_fgsn_sliding.py [--images 4] [--threads 1] [--paper]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fgsn.models import PSPNet
from fgsn.models.pspnet import upsample
from fgsn.segment import predict_scores, resolve_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--paper", action="store_true")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    depth, short, patch, step, k = (101, 1024, 713, 476, 100) if args.paper else (18, 160, 128, 86, 20)
    dev = resolve_device("auto")
    model = PSPNet({"depth": depth, "num_classes": k}).to(dev).eval()
    h, w = short, int(short * 1.5)
    imgs = [np.random.default_rng(i).integers(0, 255, (h, w, 3)).astype(np.uint8) for i in range(args.images)]

    def naive(img):
        with torch.no_grad():
            x = torch.from_numpy(img).permute(2, 0, 1).float()[None].to(dev)
            return upsample(model({"image": x})["logits"], (h, w))[0].argmax(0)

    def sliding(img):
        return predict_scores(model, img, patch, step, args.batch_size).argmax(0)

    res = {}
    for name, fn in (("naive full-image", naive), ("sliding window", sliding)):
        fn(imgs[0])  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for img in imgs:
            fn(img)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        res[name] = len(imgs) / (time.perf_counter() - t)
    print(f"device={dev}, ResNet-{depth}, image {w}x{h}, patch {patch}, step {step}, K={k}, threads={args.threads}")
    for name, v in res.items():
        print(f"{name:>18}: {v:8.3f} images/s")
    print(f"sliding / naive throughput ratio: {res['sliding window'] / res['naive full-image']:.3f}")


if __name__ == "__main__":
    main()
