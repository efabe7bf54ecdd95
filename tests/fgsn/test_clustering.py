import faiss
import numpy as np
import pytest
import torch

from fgsn.clustering import ClusterState, fit_clusters, sample_positions


def _blobs(k=4, n=200, d=32, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 10
    lab = np.repeat(np.arange(k), n)
    return (centers[lab] + rng.normal(size=(k * n, d))).astype(np.float32), lab


class TestFitClusters:
    def test_recovers_blobs(self):
        x, lab = _blobs()
        state, stats = fit_clusters(x, 4, pca_dim=8, seed=1, use_gpu=False)
        pred = state.assign(x)
        # each true blob maps to exactly one cluster and vice versa
        pairs = set(zip(lab.tolist(), pred.tolist()))
        assert len(pairs) == 4 and stats["empty"] == 0
        assert stats["counts"].sum() == len(x)

    def test_empty_clusters(self):
        # only 3 distinct features for k = 6: at least 3 clusters must stay empty, nothing breaks
        rng = np.random.default_rng(0)
        base = rng.normal(size=(3, 16)).astype(np.float32) * 5
        x = np.repeat(base, 50, axis=0)  # exact duplicates: a split cluster cannot take any of them
        state, stats = fit_clusters(x, 6, pca_dim=2, seed=0, use_gpu=False)
        assert np.isfinite(state.centroids).all()
        assert stats["empty"] >= 3
        assert stats["counts"].sum() == 150
        pred = state.assign(x)
        assert all(len(set(pred[i * 50:(i + 1) * 50])) == 1 for i in range(3))
        assert len(set(pred)) == 3

    def test_errors(self):
        with pytest.raises(ValueError):
            fit_clusters(np.zeros((3, 8), np.float32), 5, pca_dim=4)
        with pytest.raises(ValueError):
            fit_clusters(np.zeros((30, 8), np.float32), 5, pca_dim=16)


class TestClusterState:
    def test_transform_matches_faiss_and_torch(self):
        x, _ = _blobs(d=16)
        state, _ = fit_clusters(x, 4, pca_dim=8, seed=0, use_gpu=False)
        pca = faiss.PCAMatrix(16, 8, -0.5)
        pca.train(x)
        y = pca.apply_py(x)
        faiss.normalize_L2(y)
        assert np.allclose(state.transform(x), y, atol=1e-4)
        fmap = torch.from_numpy(x[:12].T.reshape(1, 16, 3, 4))
        lab_t = state.scores(fmap).argmax(1).flatten().numpy()
        assert (lab_t == state.assign(x[:12])).all()

    def test_whitening(self):
        x, _ = _blobs(d=16)
        state, _ = fit_clusters(x, 4, pca_dim=8, use_gpu=False)
        y = x @ state.pca_A.T + state.pca_b
        assert np.allclose(y.mean(0), 0, atol=1e-3)
        # faiss whitens with the eigenvalues of the unnormalised scatter matrix: isotropic, variance 1 / N
        assert np.allclose(y.var(0) * len(x), 1, rtol=0.05)

    def test_state_dict_round_trip(self):
        x, _ = _blobs(d=16)
        state, _ = fit_clusters(x, 4, pca_dim=8, use_gpu=False)
        s2 = ClusterState.from_state_dict(state.state_dict())
        assert (s2.assign(x) == state.assign(x)).all()


class TestSamplePositions:
    def test_half_at_correspondences(self):
        rng = np.random.default_rng(0)
        corr = np.array([[5.2, 3.9], [10, 10], [-3, 4], [200, 5]] + [[i, i] for i in range(20, 40)])
        pos = sample_positions((50, 60), corr, 20, rng)
        assert pos.shape == (20, 2) and pos.dtype == np.int64
        valid = {tuple(p) for p in np.round(corr).astype(int) if 0 <= p[0] < 60 and 0 <= p[1] < 50}
        assert sum(tuple(p) in valid for p in pos[:10]) == 10
        assert (pos[:, 0] < 60).all() and (pos[:, 1] < 50).all() and (pos >= 0).all()

    def test_few_correspondences_filled_with_random(self):
        pos = sample_positions((10, 10), np.array([[1.0, 2.0]]), 8, np.random.default_rng(0))
        assert len(pos) == 8 and tuple(pos[0]) == (1, 2)
