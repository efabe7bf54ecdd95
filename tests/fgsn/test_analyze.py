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
    # hand-computed: clusters split one class in two: I = H(V) = ln 2, H(U) = 1.5 ln 2 -> NMI = 1 / sqrt(1.5)
    # (the paper's Eq. 4; the arithmetic normalisation would give 2 / 2.5 = 0.8)
    assert nmi_from_contingency(np.array([[2, 0], [2, 0], [0, 4]])) == pytest.approx(1 / np.sqrt(1.5))
    assert nmi_from_contingency(np.array([[4, 4]])) == 0.0  # one cluster, two classes: H(U) = 0
    assert nmi_from_contingency(np.zeros((2, 2))) == 0.0


def test_correspondence_agreement_constant_labels(tiny_corr_root):
    """A network whose classifier outputs one label everywhere: every correspondence agrees (1.0 per
    condition) but kappa is 0."""
    import torch
    from omegaconf import OmegaConf

    from fgsn.analyze import correspondence_agreement, default_conf
    from fgsn.models import PSPNet

    torch.manual_seed(0)
    model = PSPNet({"depth": 18, "num_classes": 3, "aux": False}).eval()
    with torch.no_grad():
        model.conv6.weight.zero_()
        model.conv6.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))
    conf = OmegaConf.merge(OmegaConf.create(default_conf),
                           {"resize_short": 48, "patch": 40, "step": 27, "corr_split": "all", "device": "cpu"})
    res = correspondence_agreement(model, tiny_corr_root, conf)
    assert res["points"] > 0 and res["agreement"] == 1.0 and res["kappa"] == 0.0
    assert res["per_condition"] and all(v == 1.0 for v in res["per_condition"].values())
