"""FGSN clustering time vs number of samples: faiss (PCA-whitening + k-means, ``fgsn.clustering``) against a
plain numpy Lloyd k-means with the same iterations on the same PCA output, in the same run.

Usage: python benchmarks/bench_fgsn_clustering.py [--k 100] [--sizes 2000 8000 32000] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def kmeans_numpy(x: np.ndarray, k: int, niter: int = 20, seed: int = 0) -> np.ndarray:
    """Plain Lloyd iterations (random init; empty clusters keep their centroid). Returns (k, d) centroids."""
    rng = np.random.default_rng(seed)
    c = x[rng.choice(len(x), k, replace=False)].copy()
    xx = (x ** 2).sum(1)
    for _ in range(niter):
        d = xx[:, None] - 2 * x @ c.T + (c ** 2).sum(1)[None]
        lab = d.argmin(1)
        for j in range(k):
            m = lab == j
            if m.any():
                c[j] = x[m].mean(0)
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import faiss

    from fgsn.clustering import fit_clusters

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, 512)).astype(np.float32) * 3
    print(f"K={args.k}, D=512 -> PCA 256, 20 iterations, threads={args.threads}")
    print(f"{'N':>8} {'faiss (PCA+kmeans) s':>22} {'numpy kmeans s':>16} {'numpy / faiss':>14}")
    for n in args.sizes:
        x = centers[rng.integers(50, size=n)] + rng.normal(size=(n, 512)).astype(np.float32)
        t = time.perf_counter()
        state, _ = fit_clusters(x, args.k, 256, 20, seed=0, use_gpu=False)
        t_faiss = time.perf_counter() - t
        y = state.transform(x)  # same PCA output for the baseline
        t = time.perf_counter()
        kmeans_numpy(y, args.k, 20)
        t_np = time.perf_counter() - t
        print(f"{n:>8} {t_faiss:>22.3f} {t_np:>16.3f} {t_np / t_faiss:>14.2f}")


if __name__ == "__main__":
    main()
