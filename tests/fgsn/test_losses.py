import math

import pytest
import torch

from fgsn.losses import class_loss, corr_loss, gather_points


class TestCorrLoss:
    def test_known_answer(self):
        # two correspondences, K = 2
        p_ref = torch.tensor([[0.8, 0.2], [0.4, 0.6]])
        p_tgt = torch.tensor([[0.5, 0.5], [0.1, 0.9]])
        c = torch.tensor([0, 1])
        expected = -((math.log(0.8) + math.log(0.5)) + (math.log(0.6) + math.log(0.9))) / 2
        assert corr_loss(p_ref.log(), p_tgt.log(), c).item() == pytest.approx(expected, rel=1e-6)

    def test_zero_when_certain(self):
        lp = torch.log(torch.tensor([[1.0, 1e-30], [1e-30, 1.0]]))
        assert corr_loss(lp, lp, torch.tensor([0, 1])).item() == pytest.approx(0.0, abs=1e-6)

    def test_empty_has_gradient(self):
        a = torch.zeros(0, 3, requires_grad=True)
        loss = corr_loss(a, a, torch.zeros(0, dtype=torch.long))
        loss.backward()
        assert loss.item() == 0.0

    def test_gradient_pushes_target_to_reference_label(self):
        logits_t = torch.zeros(1, 3, requires_grad=True)
        logits_r = torch.zeros(1, 3)
        loss = corr_loss(torch.log_softmax(logits_r, 1), torch.log_softmax(logits_t, 1), torch.tensor([2]))
        loss.backward()
        assert logits_t.grad[0, 2] < 0 and logits_t.grad[0, 0] > 0  # descent raises the score of label 2

    def test_shape_check(self):
        with pytest.raises(ValueError):
            corr_loss(torch.zeros(2, 3), torch.zeros(3, 3), torch.zeros(2, dtype=torch.long))


class TestClassLoss:
    def test_known_answer_with_ignore(self):
        logits = torch.zeros(1, 2, 1, 2)
        logits[0, 0, 0, 0] = math.log(3.0)  # p = (0.75, 0.25) at pixel 0
        labels = torch.tensor([[[1, -1]]])
        assert class_loss(logits, labels).item() == pytest.approx(-math.log(0.25), rel=1e-6)

    def test_all_ignored(self):
        logits = torch.randn(1, 3, 2, 2, requires_grad=True)
        loss = class_loss(logits, torch.full((1, 2, 2), -1))
        loss.backward()
        assert loss.item() == 0.0


def test_gather_points_rounds_to_pixel_centres():
    m = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    out = gather_points(m, torch.tensor([[0.0, 0.0], [3.2, 1.6]]))  # -> pixels (0, 0) and (3, 2)
    assert out.tolist() == [[0.0, 12.0], [11.0, 23.0]]
    with pytest.raises(ValueError):
        gather_points(m, torch.tensor([[4.0, 0.0]]))
