"""Known-answer and gradient tests of the APR quaternion helpers and loss terms."""
import math

import numpy as np
import pytest
import torch

from localization.apr.losses import (atloc_errors, consecutive_motion_errors, geometric_loss, learned_weighting,
                                     pairwise_relative_errors, posenet_loss, relative_errors)
from localization.apr.pose import (cam_from_world_to_pose, lookat_point, pose_difference, pose_to_cam_from_world,
                                   qconj, qexp, qlog, qmul, qnormalize, qrotate, relative_pose)
from reconstruction.geometry import qvec_to_rotmat, random_rotation


def _qz(angle):
    """Rotation by ``angle`` radians about z as (w, x, y, z)."""
    return torch.tensor([math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)], dtype=torch.float64)


class TestQuaternionLog:
    def test_identity_is_zero(self):
        out = qlog(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        assert torch.equal(out, torch.zeros(3))

    def test_zero_vector_part_gradient_finite(self):
        q = torch.tensor([[1.0, 0.0, 0.0, 0.0]], requires_grad=True)
        qlog(q).sum().backward()
        assert torch.isfinite(q.grad).all()

    def test_known_value(self):
        # 90 degrees about z: q = (cos 45, 0, 0, sin 45), log q = (0, 0, pi/4)
        out = qlog(_qz(math.pi / 2))
        assert torch.allclose(out, torch.tensor([0, 0, math.pi / 4], dtype=torch.float64))

    def test_hemisphere(self):
        q = qnormalize(torch.tensor([0.3, -0.5, 0.2, 0.7], dtype=torch.float64))
        assert torch.allclose(qlog(q), qlog(-q))
        # a quaternion with u < 0 is moved to u >= 0 first: its log has norm <= pi/2
        assert qlog(torch.tensor([-0.9, 0.1, 0.3, 0.3])).norm() <= math.pi / 2 + 1e-6

    def test_exp_round_trip(self):
        q = qnormalize(torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
        assert torch.allclose(qexp(qlog(q)), q)

    def test_log_of_exp_round_trip(self):
        # log vectors of norm < pi/2 (u > 0 after exp) come back; the small-angle branch too
        w = torch.randn(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        w = w / w.norm(dim=-1, keepdim=True) * torch.linspace(0.0, 1.5, 10, dtype=torch.float64)[:, None]
        assert torch.allclose(qlog(qexp(w)), w)
        assert torch.allclose(qexp(torch.zeros(3)), torch.tensor([1.0, 0.0, 0.0, 0.0]))

    def test_gradcheck(self):
        q = qnormalize(torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
        assert torch.autograd.gradcheck(qlog, (q.requires_grad_(),))

    def test_bad_shape(self):
        with pytest.raises(ValueError, match="4"):
            qlog(torch.zeros(3))


class TestQuaternionAlgebra:
    def test_rotate_matches_rotmat(self):
        rng = np.random.default_rng(0)
        R = random_rotation(rng)
        _, q = cam_from_world_to_pose(np.concatenate([R, np.zeros((3, 1))], 1))
        v = rng.normal(size=3)
        out = qrotate(torch.tensor(q), torch.tensor(v)).numpy()
        assert np.allclose(out, qvec_to_rotmat(q) @ v)

    def test_pose_round_trip(self):
        rng = np.random.default_rng(1)
        T = np.concatenate([random_rotation(rng), rng.normal(size=(3, 1))], 1)
        p, q = cam_from_world_to_pose(T)
        assert q[0] >= 0
        assert np.allclose(pose_to_cam_from_world(p, q), T)

    def test_relative_pose(self):
        q0, q1 = _qz(0.3), _qz(0.5)
        p0, p1 = torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, 0, 0], dtype=torch.float64)
        dp, dq = relative_pose(p0, q0, p1, q1)
        assert torch.allclose(dq, _qz(0.2))
        assert torch.allclose(dp, qrotate(q0, p1 - p0))
        assert torch.allclose(qmul(dq, q0), q1)

    def test_lookat_point(self):
        # identity rotation: the camera looks along +z
        p = torch.tensor([1.0, 2.0, 3.0])
        out = lookat_point(p, torch.tensor([1.0, 0, 0, 0]), 2.0)
        assert torch.allclose(out, torch.tensor([1.0, 2.0, 5.0]))
        # world-to-camera rotation of +90 deg about y: the optical axis is R^T z = (-1, 0, 0)
        qy = torch.tensor([math.cos(math.pi / 4), 0, math.sin(math.pi / 4), 0])
        assert torch.allclose(lookat_point(torch.zeros(3), qy), torch.tensor([-1.0, 0, 0]), atol=1e-6)
        assert torch.allclose(qconj(qconj(qy)), qy)


class TestLosses:
    def test_posenet_loss(self):
        p_hat, p = torch.tensor([[1.0, 2.0, 2.0]]), torch.zeros(1, 3)  # ||dp|| = 3
        q = torch.tensor([[1.0, 0, 0, 0]])
        q_hat = torch.tensor([[2.0, 0, 0, 0]])  # normalised to q: zero orientation error
        assert posenet_loss(p_hat, q_hat, p, q, 0.3, 500.0).item() == pytest.approx(0.9)
        q_hat = torch.tensor([[0.0, 1.0, 0, 0]])  # ||(0,1,0,0) - (1,0,0,0)|| = sqrt 2
        assert posenet_loss(p, q_hat, p, q, 1.0, 10.0).item() == pytest.approx(10 * math.sqrt(2), rel=1e-6)

    def test_posenet_loss_hemisphere(self):
        q = qnormalize(torch.tensor([[0.5, 0.5, 0.5, 0.5]]))
        assert posenet_loss(torch.zeros(1, 3), -q, torch.zeros(1, 3), q, 1.0, 100.0).item() == pytest.approx(0, abs=1e-6)

    def test_learned_weighting(self):
        out = learned_weighting(torch.tensor(2.0), torch.tensor(0.5), torch.tensor(0.0), torch.tensor(-3.0))
        assert out.item() == pytest.approx(2.0 + 0.0 + 0.5 * math.exp(3.0) - 3.0)
        s = torch.tensor(0.0, requires_grad=True)
        learned_weighting(torch.tensor(2.0), torch.tensor(0.0), s, torch.tensor(0.0)).backward()
        assert s.grad.item() == pytest.approx(-2.0 + 1.0)  # d/ds (L e^-s + s) = -L e^-s + 1

    def test_atloc_errors(self):
        p_hat, p = torch.tensor([[1.0, -2.0, 0.5]]), torch.zeros(1, 3)
        q = _qz(math.pi / 2)[None].float()
        err_p, err_q = atloc_errors(p_hat, torch.zeros(1, 3), p, q)
        assert err_p.item() == pytest.approx(3.5)
        assert err_q.item() == pytest.approx(math.pi / 4, rel=1e-6)

    def test_geometric_loss_known_value(self):
        # true camera at the origin looking along +z: look-at point a = (0, 0, 1).
        # predicted camera at (1, 0, 0), same rotation: a^ = (1, 0, 1), d = a - a^ = (-1, 0, 0), ||d|| = 1;
        # cos(a^, d) = -1 / sqrt 2, s = 1 + 1/sqrt 2; orientation error 0.
        q = torch.tensor([[1.0, 0, 0, 0]])
        out = geometric_loss(torch.tensor([[1.0, 0, 0]]), q, torch.zeros(1, 3), q, beta=500.0)
        assert out.item() == pytest.approx(1 + 1 + 1 / math.sqrt(2), rel=1e-6)

    def test_geometric_loss_orientation_term(self):
        # same centre, rotation error only: a and a^ differ too
        q, q_hat = _qz(0.0)[None].float(), _qz(0.2)[None].float()
        out = geometric_loss(torch.zeros(1, 3), q_hat, torch.zeros(1, 3), q, beta=10.0).item()
        # rotation about z keeps the optical axis: d = 0, only 1.5 beta ||q^ - q|| remains
        assert out == pytest.approx(1.5 * 10.0 * (q_hat - q).norm().item(), rel=1e-5)

    def test_geometric_loss_zero(self):
        q = qnormalize(torch.tensor([[0.2, 0.3, -0.4, 0.5]]))
        p = torch.tensor([[1.0, 2.0, 3.0]])
        assert geometric_loss(p, q, p, q, beta=500.0).item() == pytest.approx(0.0, abs=1e-5)

    def test_relative_errors(self):
        # predicted positions move by (1, 0, 0), the truth by (0, 2, 0); rotations: truth constant,
        # prediction turns by 0.4 rad about z between the frames.
        p = torch.tensor([[[0.0, 0, 0], [0.0, 2, 0]]])
        p_hat = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]])
        q = torch.tensor([[[1.0, 0, 0, 0], [1.0, 0, 0, 0]]])
        q_hat = torch.stack([_qz(0.0), _qz(0.4)]).float()[None]
        err_p, err_q = relative_errors(p_hat, q_hat, p, q, "l1")
        assert err_p.item() == pytest.approx(3.0)  # |1 - 0| + |0 - 2|
        assert err_q.item() == pytest.approx(0.2, rel=1e-5)  # log of a 0.4 rad rotation: half angle
        err_p, err_q = relative_errors(p_hat, q_hat, p, q, "l2")
        assert err_p.item() == pytest.approx(math.sqrt(5))
        assert err_q.item() == pytest.approx((_qz(0.4) - _qz(0.0)).norm().item(), rel=1e-5)

    def test_relative_errors_needs_window(self):
        with pytest.raises(ValueError, match="T>=2"):
            relative_errors(torch.zeros(2, 1, 3), torch.zeros(2, 1, 4), torch.zeros(2, 1, 3), torch.zeros(2, 1, 4))

    def test_pose_difference(self):
        """VLocNet's relative motion (x_1 - x_0, q_0^-1 q_1) on hand-made poses: q_0 = 90 deg about x, q_1 = 90 deg
        about z after q_0, i.e. (0.5, 0.5, 0.5, 0.5); q_0^-1 q_1 = 90 deg about R_0^T z = y: (c45, 0, s45, 0), where
        relative_pose's q_1 q_0^-1 is 90 deg about z."""
        c = math.sqrt(0.5)
        q0 = torch.tensor([c, c, 0.0, 0.0])
        q1 = torch.tensor([0.5, 0.5, 0.5, 0.5])
        p0, p1 = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 5.0])
        dp, dq = pose_difference(p0, q0, p1, q1)
        assert torch.allclose(dp, torch.tensor([1.0, 0.0, 2.0]))  # world frame, not rotated
        assert torch.allclose(dq, torch.tensor([c, 0.0, c, 0.0]), atol=1e-6)
        assert torch.allclose(relative_pose(p0, q0, p1, q1)[1], torch.tensor([c, 0.0, 0.0, c]), atol=1e-6)

    def test_consecutive_motion_errors(self):
        """Truth: x = (0,0,0), (1,0,0), world-to-camera rotations 90 and 180 deg about z, so the motion is
        ((1, 0, 0), q_z(90)); prediction: (5,5,5), (6,5,7), both identity, motion ((1, 0, 2), 1). Errors: 2 and
        ||q_z(90) - 1|| = 2 sin(22.5 deg). (The camera-frame relative_errors would give ||(1,0,2) - (0,1,0)||.)"""
        p = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]])
        q = torch.stack([_qz(math.pi / 2), _qz(math.pi)]).float()[None]
        p_hat = torch.tensor([[[5.0, 5, 5], [6.0, 5, 7]]])
        q_hat = torch.tensor([[[2.0, 0, 0, 0], [1.0, 0, 0, 0]]])  # any norm: normalised
        err_p, err_q = consecutive_motion_errors(p_hat, q_hat, p, q)
        assert err_p.item() == pytest.approx(2.0)
        assert err_q.item() == pytest.approx(2 * math.sin(math.radians(22.5)), rel=1e-6)
        assert relative_errors(p_hat, q_hat, p, q, "l2")[0].item() == pytest.approx(math.sqrt(6), rel=1e-6)
        with pytest.raises(ValueError, match="T>=2"):
            consecutive_motion_errors(p[:, :1], q[:, :1], p[:, :1], q[:, :1])


def _triplet():
    """A window of 3 frames with hand-computable relative errors (see TestPairwiseRelativeErrors)."""
    p = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]]], dtype=torch.float64)
    p_hat = torch.tensor([[[0.0, 0, 0], [1.0, 1, 0], [3.0, 0, 1]]], dtype=torch.float64)
    q = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand(1, 3, 4)  # log q = 0
    logq_hat = torch.tensor([[[0.0, 0, 0], [0.0, 0, 0.1], [0.0, 0, 0.3]]], dtype=torch.float64)
    return p_hat, logq_hat, p, q


class TestPairwiseRelativeErrors:
    """MapNet / AtLoc+ relative term: v_ij = (x_i - x_j, log q_i - log q_j) over all pairs of the window."""

    def test_known_value_all_pairs(self):
        p_hat, logq_hat, p, q = _triplet()
        err_p, err_q = pairwise_relative_errors(p_hat, logq_hat, p, q)
        # positions, (x_i - x_j) - (x^_i - x^_j): pair (0, 1): (0, 1, 0) -> 1; (0, 2): (0, 0, 1) -> 1;
        # (1, 2): (0, -1, 1) -> 2; mean 4/3. Log-quaternions (truth 0): (0, 1): 0.1, (0, 2): 0.3, (1, 2): 0.2.
        assert err_p.item() == pytest.approx(4 / 3)
        assert err_q.item() == pytest.approx(0.2)
        # the consecutive camera-frame definition (the code before, now AtLoc+'s `relative: camera`) misses the
        # pair (0, 2) and rotates pair (1, 2) into predicted camera 1 (0.2 rad about z):
        # dp^ = R_z(0.2) (2, -1, 1) against dp = (2, 0, 0); rotations: (0.1 + 0.2) / 2
        old_p, old_q = relative_errors(p_hat, qexp(logq_hat), p, q, "l1")
        c, s = math.cos(0.2), math.sin(0.2)
        assert old_p.item() == pytest.approx((1 + abs(2 * c + s - 2) + abs(2 * s - c) + 1) / 2)
        assert old_q.item() == pytest.approx(0.15)

    def test_world_frame_log_differences(self):
        # true rotations about different axes; the prediction has the true positions and log q = 0 everywhere.
        w = torch.tensor([[[0.0, 0, 0], [0.3, 0, 0], [0.3, 0.4, 0]]], dtype=torch.float64)
        p = torch.tensor([[[0.0, 0, 0], [1.0, 2, 0], [2.0, -1, 3]]], dtype=torch.float64)
        err_p, err_q = pairwise_relative_errors(p, torch.zeros_like(w), p, qexp(w))
        # ||w_i - w_j||_1: (0, 1) 0.3, (0, 2) 0.7, (1, 2) 0.4
        assert err_p.item() == pytest.approx(0.0)
        assert err_q.item() == pytest.approx(1.4 / 3)
        # camera-frame relative rotations q_j q_i^-1 are not differences of logs (x and y rotations do not commute)
        assert relative_errors(p, qexp(torch.zeros_like(w)), p, qexp(w), "l1")[1].item() != pytest.approx(0.35)

    def test_symmetric_in_the_pair_order(self):
        # h(v_ij) = h(v_ji): reversing the window gives the same errors, so pairs i < j and i != j have one mean
        p_hat, logq_hat, p, q = _triplet()
        ref = pairwise_relative_errors(p_hat, logq_hat, p, q)
        rev = pairwise_relative_errors(p_hat.flip(1), logq_hat.flip(1), p.flip(1), q.flip(1))
        assert torch.allclose(torch.stack(ref), torch.stack(rev))

    def test_two_frames_is_the_single_pair(self):
        p_hat, logq_hat, p, q = _triplet()
        err_p, err_q = pairwise_relative_errors(p_hat[:, ::2], logq_hat[:, ::2], p[:, ::2], q[:, ::2])
        assert err_p.item() == pytest.approx(1.0) and err_q.item() == pytest.approx(0.3)

    def test_gradcheck(self):
        p_hat, logq_hat, p, q = _triplet()
        p_hat = p_hat + 0.01 * torch.arange(9, dtype=torch.float64).view(1, 3, 3)  # away from the L1 kinks
        fn = lambda a, b: torch.stack(pairwise_relative_errors(a, b, p, q))  # noqa: E731
        assert torch.autograd.gradcheck(fn, (p_hat.requires_grad_(), (logq_hat + 0.013).requires_grad_()))

    def test_bad_shapes(self):
        with pytest.raises(ValueError, match="T>=2"):
            pairwise_relative_errors(torch.zeros(2, 1, 3), torch.zeros(2, 1, 3), torch.zeros(2, 1, 3),
                                     torch.zeros(2, 1, 4))
        with pytest.raises(ValueError, match="q must have shape"):
            pairwise_relative_errors(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3), torch.zeros(2, 3, 3),
                                     torch.zeros(2, 3, 3))


class TestModelLosses:
    """Each model's ``loss`` on hand-made predictions equals the paper's formula computed by hand."""

    @staticmethod
    def _model(name, **extra):
        from localization.apr.models import get_model

        return get_model(name)({"backbone": {"depth": 10, "base_width": 8}, **extra})

    def test_posenet_original_and_geometric(self):
        p = torch.zeros(1, 1, 3)
        q = torch.tensor([[[1.0, 0, 0, 0]]])
        pred = {"positions_all": torch.tensor([1.0, 2.0, 2.0]).expand(3, 1, 1, 3),  # ||dp|| = 3 at every regressor
                "qvecs_raw_all": torch.tensor([2.0, 0, 0, 0]).expand(3, 1, 1, 4),  # normalised: no orientation error
                "position": torch.tensor([[[1.0, 2.0, 2.0]]]), "qvec": q}
        model = self._model("posenet", feat_dim=8, aux_dim=8)
        losses, _ = model.loss(pred, {"position": p, "qvec": q})
        assert losses["total"].item() == pytest.approx((0.3 + 0.3 + 1.0) * 3.0, rel=1e-6)
        assert losses["reg1"].item() == pytest.approx(0.9, rel=1e-6)
        # geometric loss, look-at distance 2 m with positions in units of 2 m: one unit, as in
        # test_geometric_loss_known_value, where one regressor's loss is 2 + 1/sqrt 2
        model = self._model("posenet", feat_dim=8, aux_dim=8, loss="geometric", lookat_distance_m=2.0)
        model.set_pose_stats([0.0, 0.0, 0.0], 2.0)
        pred["positions_all"] = torch.tensor([1.0, 0.0, 0.0]).expand(3, 1, 1, 3)
        losses, _ = model.loss(pred, {"position": p, "qvec": q})
        # Ward et al.'s loss is the plain sum over the three regressors: alpha = (0.3, 0.3, 1) belongs to the
        # original PoseNet loss only. This test used to expect (0.3 + 0.3 + 1) x, locking in an alpha_i factor
        # the paper does not have; that weighting is now the explicit option geometric_alpha (ours, off).
        assert losses["total"].item() == pytest.approx(3 * (2 + 1 / math.sqrt(2)), rel=1e-6)
        model = self._model("posenet", feat_dim=8, aux_dim=8, loss="geometric", lookat_distance_m=2.0,
                            geometric_alpha=True)
        model.set_pose_stats([0.0, 0.0, 0.0], 2.0)
        losses, _ = model.loss(pred, {"position": p, "qvec": q})
        assert losses["total"].item() == pytest.approx(1.6 * (2 + 1 / math.sqrt(2)), rel=1e-6)

    def test_posenet_geometric_per_regressor(self):
        # one pose per regressor, the true camera at the origin with the identity rotation (look-at point
        # a = (0, 0, 1), 1 m = 1 unit), beta = (150, 150, 500):
        #   reg1: p^ = (1, 0, 0): a^ = (1, 0, 1), d = (-1, 0, 0), s = 1 + 1/sqrt 2 -> 2 + 1/sqrt 2
        #   reg2: p^ = 0, q^ = 0.2 rad about z (the optical axis: d = 0) -> 1.5 * 150 * ||q^ - q|| = 450 sin 0.05
        #   reg3: p^ = (0, 2, 0): a^ = (0, 2, 1), d = (0, -2, 0), cos(a^, d) = -2/sqrt 5 -> 2 + 4 (1 + 2/sqrt 5)
        model = self._model("posenet", feat_dim=8, aux_dim=8, loss="geometric", lookat_distance_m=1.0)
        ident = torch.tensor([1.0, 0, 0, 0])
        pred = {"positions_all": torch.tensor([[1.0, 0, 0], [0.0, 0, 0], [0.0, 2, 0]]).view(3, 1, 1, 3),
                "qvecs_raw_all": torch.stack([ident, _qz(0.2).float(), ident]).view(3, 1, 1, 4),
                "position": torch.tensor([[[0.0, 2, 0]]]), "qvec": ident.view(1, 1, 4)}
        losses, _ = model.loss(pred, {"position": torch.zeros(1, 1, 3), "qvec": ident.view(1, 1, 4)})
        expected = [2 + 1 / math.sqrt(2), 450 * math.sin(0.05), 6 + 8 / math.sqrt(5)]
        for key, value in zip(("reg1", "reg2", "reg3"), expected):
            assert losses[key].item() == pytest.approx(value, rel=1e-5)
        assert losses["total"].item() == pytest.approx(sum(expected), rel=1e-5)  # no alpha_i factors

    def test_atloc(self):
        model = self._model("atloc", feat_dim=8)
        q = _qz(math.pi / 2)[None, None].float()  # log q = (0, 0, pi/4)
        pred = {"position": torch.tensor([[[1.0, -2.0, 0.5]]]), "logq": torch.zeros(1, 1, 3),
                "qvec": torch.tensor([[[1.0, 0, 0, 0]]])}
        losses, metrics = model.loss(pred, {"position": torch.zeros(1, 1, 3), "qvec": q})
        # beta = 0, gamma = -3 at initialisation: 3.5 e^0 + 0 + (pi/4) e^3 - 3
        assert losses["total"].item() == pytest.approx(3.5 + math.pi / 4 * math.exp(3.0) - 3.0, rel=1e-6)
        assert metrics["err_R_deg"].item() == pytest.approx(90.0, abs=1e-3)

    def test_atloc_plus(self):
        model = self._model("atloc_plus", feat_dim=8, rel_weight=0.5, rel_gamma_init=-1.0)
        ident = torch.tensor([1.0, 0, 0, 0]).expand(1, 2, 4)
        pred = {"position": torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]]), "logq": torch.zeros(1, 2, 3), "qvec": ident}
        data = {"position": torch.tensor([[[0.0, 0, 0], [0.0, 2, 0]]]), "qvec": ident}
        losses, _ = model.loss(pred, data)
        # absolute: L1 errors 0 and 3 -> 1.5; 1.5 e^0 + 0 + 0 e^3 - 3 = -1.5
        # relative: dp^ = (1, 0, 0), dp = (0, 2, 0) -> 3; 3 e^0 + 0 + 0 e^1 - 1 = 2; total -1.5 + 0.5 * 2
        assert losses["abs_p"].item() == pytest.approx(1.5) and losses["rel_p"].item() == pytest.approx(3.0)
        assert losses["total"].item() == pytest.approx(-0.5, rel=1e-6)

    def test_atloc_plus_triplet(self):
        # the window of TestPairwiseRelativeErrors (relative errors 4/3 and 0.2 over the three pairs)
        model = self._model("atloc_plus", feat_dim=8, rel_weight=0.5, rel_gamma_init=-1.0)
        p_hat, logq_hat, p, q = (x.float() for x in _triplet())
        pred = {"position": p_hat, "logq": logq_hat, "qvec": qexp(logq_hat)}
        losses, _ = model.loss(pred, {"position": p, "qvec": q})
        # absolute (beta 0, gamma -3): L1 errors (0 + 1 + 1) / 3 and (0 + 0.1 + 0.3) / 3
        abs_total = 2 / 3 + (0.4 / 3) * math.exp(3.0) - 3.0
        # relative: alpha (T - 1) h = 0.5 * 2 * (4/3 e^0 + 0 + 0.2 e^1 - 1), the paper's sums over the frames and
        # the ordered pairs i != j divided by T = 3
        assert losses["rel_p"].item() == pytest.approx(4 / 3) and losses["rel_q"].item() == pytest.approx(0.2)
        assert losses["total"].item() == pytest.approx(abs_total + (4 / 3 + 0.2 * math.e - 1.0), rel=1e-5)
        # the option `relative: camera` (ours) keeps the consecutive camera-frame term: rel_weight h(errors)
        model = self._model("atloc_plus", feat_dim=8, rel_weight=0.5, rel_gamma_init=-1.0, relative="camera")
        losses, _ = model.loss(pred, {"position": p, "qvec": q})
        old_p, old_q = relative_errors(p_hat, pred["qvec"], p, q, "l1")  # values in test_known_value_all_pairs
        assert losses["rel_p"].item() == pytest.approx(old_p.item()) and losses["rel_q"].item() == pytest.approx(0.15)
        expected = abs_total + 0.5 * (old_p.item() + 0.15 * math.e - 1.0)
        assert losses["total"].item() == pytest.approx(expected, rel=1e-5)

    def test_vlocnet(self):
        model = self._model("vlocnet", fc_dim=8, pose_channels=4)
        ident = torch.tensor([1.0, 0, 0, 0])
        data = {"position": torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]]]), "qvec": ident.expand(1, 3, 4)}
        pred = {"position": torch.tensor([[[1.0, 0, 0], [2.0, 0, 3.0]]]), "qvec": ident.expand(1, 2, 4)}
        losses, _ = model.loss(pred, data)  # the last two frames; no odometry prediction given; step 1: global
        # L_x = (0 + 3) / 2 plus the consecutive-pair error ||(1, 0, 3) - (1, 0, 0)|| = 3 (x_t - x_{t-1}); L_q = 0
        assert losses["geo_x"].item() == pytest.approx(3.0)
        assert losses["total"].item() == pytest.approx(4.5 + 0.0 + 0.0 * math.exp(3.0) - 3.0, rel=1e-6)

    def test_colorization(self):
        # Updated for issue 14: the network outputs log q and the orientation term is on log q (the old test gave a
        # quaternion); ab travels in Lab units and the colour term is the paper's L1 sum (the old: ab / 110, mean).
        model = self._model("colorization", color_width=4, fuse_channels=8, fc_dim=8)
        q = _qz(0.4)[None, None].float()  # log q = (0, 0, 0.2)
        pred = {"position": torch.tensor([[[3.0, 4.0, 0.0]]]), "logq": torch.zeros(1, 1, 3), "qvec": q,
                "ab": torch.full((1, 2, 4, 4), 55.0), "ab_gt": torch.zeros(1, 2, 4, 4)}
        data = {"position": torch.zeros(1, 1, 3), "qvec": torch.tensor([[[1.0, 0, 0, 0]]])}
        pred_id = {**pred, "logq": qlog(q)}  # log q^ of q_z(0.4) against the identity: ||(0, 0, 0.2)|| = 0.2
        losses, _ = model.loss(pred_id, data)
        # 5 + 3 * 0.2 + 0.2 * (32 elements x 55)
        assert losses["color"].item() == pytest.approx(32 * 55.0)
        assert losses["q"].item() == pytest.approx(0.2, rel=1e-6)
        assert losses["total"].item() == pytest.approx(5.0 + 3.0 * 0.2 + 0.2 * 32 * 55.0, rel=1e-6)
        # q_loss: exp (ours): ||exp(log q^) - q|| on the quaternion "qvec", ||q_z(0.4) - 1|| = 2 sin(0.1)
        model = self._model("colorization", color_width=4, fuse_channels=8, fc_dim=8, q_loss="exp")
        losses, _ = model.loss(pred, data)
        assert losses["q"].item() == pytest.approx(2 * math.sin(0.1), rel=1e-6)

    def test_colorization_color_loss(self):
        """Two images of 1x2 pixels: the paper's sum over pixels and ab channels (Lab units), averaged over the
        images; ``mean_scaled`` (ours) is the former mean of |ab^ - ab| / 110."""
        ab_gt = torch.tensor([[[[10.0, -20.0]], [[0.0, 5.0]]], [[[0.0, 0.0]], [[0.0, 0.0]]]])  # (2, 2, 1, 2)
        ab_hat = torch.tensor([[[[12.0, -20.0]], [[-3.0, 5.0]]], [[[1.0, -1.0]], [[4.0, 0.0]]]])
        # image 0: |2| + |0| + |-3| + |0| = 5; image 1: 1 + 1 + 4 + 0 = 6 -> (5 + 6) / 2
        model = self._model("colorization", color_width=4, fuse_channels=8, fc_dim=8)
        assert model.color_loss(ab_hat, ab_gt).item() == pytest.approx(5.5)
        old = self._model("colorization", color_width=4, fuse_channels=8, fc_dim=8, color_loss="mean_scaled")
        assert old.color_loss(ab_hat, ab_gt).item() == pytest.approx(11.0 / 8 / 110.0)
        with pytest.raises(ValueError, match="color_loss"):
            self._model("colorization", color_width=4, fuse_channels=8, fc_dim=8, color_loss="l2")
        with pytest.raises(ValueError, match="q_loss"):
            self._model("colorization", color_width=4, fuse_channels=8, fc_dim=8, q_loss="l1")
