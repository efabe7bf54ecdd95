"""FGSN self-supervised labels: feature sampling, PCA whitening, k-means (Larsson et al., ICCV 2019, sec. 3.2).

Features: the 512-d ``conv5_4`` output of ``PSPNet`` (before ReLU), evaluated with the sliding window of
``fgsn.sliding``. Per reference image up to ``samples_per_image`` positions are sampled, half at that image's
correspondence points (training split), half uniformly at random. The features are PCA-reduced to ``pca_dim``
with whitening (faiss ``PCAMatrix(d, pca_dim, -0.5)``), L2-normalised, and clustered with faiss k-means
(``niter`` iterations, GPU when available and requested). Empty clusters during k-means are handled by faiss
(an empty centroid is replaced by a perturbed copy of a large cluster's centroid).

A pixel's label is the nearest centroid of its transformed feature (``ClusterState.scores`` computes
2 c_k^T y - |c_k|^2, whose argmax over k is the nearest centroid).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


@dataclass
class ClusterState:
    """PCA-whitening + centroids; y = normalize(A x + b).

    Attributes:
        pca_A: (D_out, D_in) float32 whitening matrix (faiss ``PCAMatrix.A``).
        pca_b: (D_out,) float32 offset (faiss ``PCAMatrix.b``).
        centroids: (K, D_out) float32.
    """

    pca_A: np.ndarray
    pca_b: np.ndarray
    centroids: np.ndarray

    @property
    def num_clusters(self) -> int:
        return len(self.centroids)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(N, D_in) features -> (N, D_out) whitened, L2-normalised."""
        y = x.astype(np.float32) @ self.pca_A.T + self.pca_b
        return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)

    def assign(self, x: np.ndarray) -> np.ndarray:
        """(N, D_in) features -> (N,) int64 nearest-centroid labels."""
        y = self.transform(x)
        return np.argmax(2 * y @ self.centroids.T - (self.centroids ** 2).sum(1), axis=1)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D_in, h, w) feature maps -> (B, K, h, w) scores 2 c^T y - |c|^2 (argmax = nearest centroid)."""
        A = torch.as_tensor(self.pca_A, device=features.device)
        b = torch.as_tensor(self.pca_b, device=features.device)
        C = torch.as_tensor(self.centroids, device=features.device)
        y = torch.einsum("oi,bihw->bohw", A, features.float()) + b[:, None, None]
        y = F.normalize(y, dim=1)
        return 2 * torch.einsum("ko,bohw->bkhw", C, y) - (C ** 2).sum(1)[:, None, None]

    def state_dict(self) -> dict:
        return {"pca_A": torch.from_numpy(self.pca_A), "pca_b": torch.from_numpy(self.pca_b),
                "centroids": torch.from_numpy(self.centroids)}

    @classmethod
    def from_state_dict(cls, sd: dict) -> "ClusterState":
        return cls(*(sd[k].cpu().numpy().astype(np.float32) for k in ("pca_A", "pca_b", "centroids")))


def sample_positions(shape_hw, corr_points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sample up to ``n`` pixel positions: half at correspondence points, the rest uniformly at random.

    Args:
        shape_hw: (H, W) of the image.
        corr_points: (M, 2) correspondence points (x, y) in that image (rounded to pixels, out-of-image dropped).
        n: total number of positions.
    Returns:
        (n', 2) int64 positions (x, y), n' = n (when M < n / 2, more random points fill up).
    """
    H, W = shape_hw
    pts = np.round(np.asarray(corr_points, dtype=np.float64).reshape(-1, 2)).astype(np.int64)
    pts = pts[(pts[:, 0] >= 0) & (pts[:, 1] >= 0) & (pts[:, 0] < W) & (pts[:, 1] < H)]
    n_corr = min(n // 2, len(pts))
    chosen = pts[rng.choice(len(pts), n_corr, replace=False)] if n_corr else np.zeros((0, 2), np.int64)
    n_rand = n - n_corr
    rand = np.stack([rng.integers(0, W, n_rand), rng.integers(0, H, n_rand)], 1)
    return np.concatenate([chosen, rand]).astype(np.int64)


def faiss_gpu_available() -> bool:
    try:
        import faiss

        return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    except ImportError:  # pragma: no cover
        return False


def fit_clusters(features: np.ndarray, k: int, pca_dim: int = 256, niter: int = 20, seed: int = 0,
                 use_gpu: bool | None = None) -> tuple[ClusterState, dict]:
    """PCA-whitening + L2 normalisation + k-means (faiss).

    Args:
        features: (N, D) float features, N >= k.
        k: number of clusters.
        pca_dim: output dimension of the PCA (<= D).
        niter: k-means iterations.
        seed: k-means seed.
        use_gpu: faiss GPU k-means; None = when available.
    Returns:
        The cluster state and statistics: ``counts`` (K,) cluster sizes of the training features, ``empty`` number
        of empty clusters after k-means, ``objective`` final k-means objective.
    Raises:
        ValueError: fewer features than clusters, or pca_dim > D.
    """
    import faiss

    x = np.ascontiguousarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"Expected (N, D) features, got {x.shape}")
    n, d = x.shape
    if n < k:
        raise ValueError(f"Need at least k={k} features, got {n}")
    if pca_dim > d:
        raise ValueError(f"pca_dim={pca_dim} > feature dimension {d}")
    pca = faiss.PCAMatrix(d, pca_dim, -0.5)
    pca.train(x)
    A = faiss.vector_to_array(pca.A).reshape(pca_dim, d).astype(np.float32)
    b = faiss.vector_to_array(pca.b).astype(np.float32)
    y = pca.apply_py(x)
    faiss.normalize_L2(y)
    gpu = faiss_gpu_available() if use_gpu is None else bool(use_gpu)
    km = faiss.Kmeans(pca_dim, k, niter=niter, seed=seed, gpu=gpu, verbose=False, min_points_per_centroid=1,
                      max_points_per_centroid=max(256, n // k + 1))
    km.train(y)
    cent = km.centroids.astype(np.float32)
    state = ClusterState(A, b, cent)
    lab = np.argmax(2 * y @ cent.T - (cent ** 2).sum(1), axis=1)
    counts = np.bincount(lab, minlength=k)
    stats = {"counts": counts, "empty": int((counts == 0).sum()),
             "objective": float(km.obj[-1]) if len(km.obj) else float("nan")}
    if stats["empty"]:
        logger.warning("%d of %d clusters are empty after k-means (fewer distinct features than clusters?)",
                       stats["empty"], k)
    return state, stats
