import numpy as np
import pytest

from fgsn.analyze import contingency_table, nmi_from_contingency


def test_contingency_ignores_void():
    t = contingency_table(np.array([0, 0, 1, 2, 1]), np.array([1, 1, 0, -1, 11]), 3, 2)
    assert t.tolist() == [[0, 2], [1, 0], [0, 0]]


def test_nmi_known_answers():
    # identical partitions (up to renaming) -> 1
    assert nmi_from_contingency(np.array([[0, 5], [7, 0]])) == pytest.approx(1.0)
    # independent partitions -> 0
    assert nmi_from_contingency(np.array([[3, 3], [3, 3]])) == pytest.approx(0.0, abs=1e-12)
    # hand-computed: clusters split one class in two: I = H(V) = ln 2, H(U) = 1.5 ln 2 -> NMI = 2 / 2.5
    assert nmi_from_contingency(np.array([[2, 0], [2, 0], [0, 4]])) == pytest.approx(0.8)
    assert nmi_from_contingency(np.zeros((2, 2))) == 0.0
