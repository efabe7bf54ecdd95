"""Key mappings, tested with state dicts built independently in the two published layouts."""
import pytest
import torch
from omegaconf import OmegaConf

from fgsn.models import PSPNet
from fgsn.weights import detect_layout, load_weights, map_pspnet_keys

N_BLOCKS_50 = [3, 4, 6, 3]


def _bn(prefix, c, gen):
    return {f"{prefix}.weight": torch.rand(c, generator=gen), f"{prefix}.bias": torch.rand(c, generator=gen),
            f"{prefix}.running_mean": torch.rand(c, generator=gen), f"{prefix}.running_var": torch.rand(c, generator=gen),
            f"{prefix}.num_batches_tracked": torch.tensor(5)}


def _conv(key, shape, gen):
    return {key: torch.randn(*shape, generator=gen)}


def cross_season_pspnet50(n_classes=19, gen=None):
    """State dict with the keys and shapes of cross-season-segmentation's ``PSPNet(n_blocks=[3, 4, 6, 3])``."""
    gen = gen or torch.Generator().manual_seed(0)
    sd = {}
    for i, (cin, cout) in enumerate([(3, 64), (64, 64), (64, 128)], 1):
        sd |= _conv(f"fcn.layer1.conv{i}.conv.weight", (cout, cin, 3, 3), gen) | _bn(f"fcn.layer1.conv{i}.bn", cout, gen)
    cin = 128
    for L, (n, mid) in enumerate(zip(N_BLOCKS_50, [64, 128, 256, 512]), 2):
        out = mid * 4
        for b in range(1, n + 1):
            p = f"fcn.layer{L}.block{b}"
            bin_ = cin if b == 1 else out
            sd |= _conv(f"{p}.reduce.conv.weight", (mid, bin_, 1, 1), gen) | _bn(f"{p}.reduce.bn", mid, gen)
            sd |= _conv(f"{p}.conv3x3.conv.weight", (mid, mid, 3, 3), gen) | _bn(f"{p}.conv3x3.bn", mid, gen)
            sd |= _conv(f"{p}.increase.conv.weight", (out, mid, 1, 1), gen) | _bn(f"{p}.increase.bn", out, gen)
            if b == 1:
                sd |= _conv(f"{p}.proj.conv.weight", (out, bin_, 1, 1), gen) | _bn(f"{p}.proj.bn", out, gen)
        cin = out
    for s in range(4):  # pyramids [6, 3, 2, 1]
        sd |= _conv(f"ppm.stages.{s}.conv.conv.weight", (512, 2048, 1, 1), gen) | _bn(f"ppm.stages.{s}.conv.bn", 512, gen)
    sd |= _conv("final.conv5_4.conv.weight", (512, 4096, 3, 3), gen) | _bn("final.conv5_4.bn", 512, gen)
    sd |= _conv("conv6.weight", (n_classes, 512, 1, 1), gen) | _conv("conv6.bias", (n_classes,), gen)
    sd |= _conv("aux.conv4_aux.conv.weight", (256, 1024, 3, 3), gen) | _bn("aux.conv4_aux.bn", 256, gen)
    sd |= _conv("conv6_1.weight", (n_classes, 256, 1, 1), gen) | _conv("conv6_1.bias", (n_classes,), gen)
    return sd


def torchvision_resnet50(deep_stem=False, gen=None):
    """State dict with the keys and shapes of ``torchvision.models.resnet50()`` (or its deep-stem variant)."""
    gen = gen or torch.Generator().manual_seed(1)
    sd = {}
    if deep_stem:
        for i, (cin, cout) in enumerate([(3, 64), (64, 64), (64, 128)], 1):
            sd |= _conv(f"conv{i}.weight", (cout, cin, 3, 3), gen) | _bn(f"bn{i}", cout, gen)
        cin = 128
    else:
        sd |= _conv("conv1.weight", (64, 3, 7, 7), gen) | _bn("bn1", 64, gen)
        cin = 64
    for L, (n, mid) in enumerate(zip(N_BLOCKS_50, [64, 128, 256, 512]), 1):
        out = mid * 4
        for b in range(n):
            p = f"layer{L}.{b}"
            bin_ = cin if b == 0 else out
            sd |= _conv(f"{p}.conv1.weight", (mid, bin_, 1, 1), gen) | _bn(f"{p}.bn1", mid, gen)
            sd |= _conv(f"{p}.conv2.weight", (mid, mid, 3, 3), gen) | _bn(f"{p}.bn2", mid, gen)
            sd |= _conv(f"{p}.conv3.weight", (out, mid, 1, 1), gen) | _bn(f"{p}.bn3", out, gen)
            if b == 0:
                sd |= _conv(f"{p}.downsample.0.weight", (out, bin_, 1, 1), gen) | _bn(f"{p}.downsample.1", out, gen)
        cin = out
    sd |= _conv("fc.weight", (1000, 2048), gen) | _conv("fc.bias", (1000,), gen)
    return sd


@pytest.fixture(scope="module")
def net50():
    return PSPNet({"depth": 50, "num_classes": 19})


class TestPSPNetLayout:
    def test_full_load_and_placement(self, net50):
        src = cross_season_pspnet50()
        assert detect_layout(src) == "pspnet"
        rep = load_weights(net50, {"state_dict": {"module." + k: v for k, v in src.items()}}, strict=True)
        assert rep.ok and len(rep.loaded) == len(src)
        sd = net50.state_dict()
        assert torch.equal(sd["backbone.conv3.weight"], src["fcn.layer1.conv3.conv.weight"])
        assert torch.equal(sd["backbone.bn2.running_var"], src["fcn.layer1.conv2.bn.running_var"])
        assert torch.equal(sd["backbone.layer3.5.conv2.weight"], src["fcn.layer4.block6.conv3x3.conv.weight"])
        assert torch.equal(sd["backbone.layer1.0.downsample.0.weight"], src["fcn.layer2.block1.proj.conv.weight"])
        assert torch.equal(sd["backbone.layer4.2.bn3.bias"], src["fcn.layer5.block3.increase.bn.bias"])
        assert torch.equal(sd["aux_cls.weight"], src["conv6_1.weight"])
        assert torch.equal(sd["aux_conv.weight"], src["aux.conv4_aux.conv.weight"])
        # pyramid stages: theirs [6, 3, 2, 1] -> ours [1, 2, 3, 6]
        assert torch.equal(sd["ppm.stages.3.conv.weight"], src["ppm.stages.0.conv.conv.weight"])
        assert torch.equal(sd["ppm.stages.0.bn.bias"], src["ppm.stages.3.conv.bn.bias"])
        w, W = sd["conv5_4.weight"], src["final.conv5_4.conv.weight"]
        assert torch.equal(w[:, :2048], W[:, :2048])
        for ours, theirs in ((0, 3), (1, 2), (2, 1), (3, 0)):  # blocks of 512 input channels
            assert torch.equal(w[:, 2048 + 512 * ours:2048 + 512 * (ours + 1)],
                               W[:, 2048 + 512 * theirs:2048 + 512 * (theirs + 1)])

    def test_permutation_is_functionally_equivalent(self, net50):
        """conv5_4 on [x, p6, p3, p2, p1] with their weights == conv5_4 on [x, p1, p2, p3, p6] with ours."""
        src = cross_season_pspnet50()
        mapped, unknown = map_pspnet_keys(src)
        assert unknown == []
        feats = {b: torch.randn(1, 512, 3, 3) for b in (1, 2, 3, 6)}
        x = torch.randn(1, 2048, 3, 3)
        theirs = torch.nn.functional.conv2d(torch.cat([x] + [feats[b] for b in (6, 3, 2, 1)], 1),
                                            src["final.conv5_4.conv.weight"], padding=1)
        ours = torch.nn.functional.conv2d(torch.cat([x] + [feats[b] for b in (1, 2, 3, 6)], 1),
                                          mapped["conv5_4.weight"], padding=1)
        assert torch.allclose(theirs, ours, atol=1e-3)

    def test_unknown_and_missing_reported(self, net50):
        src = cross_season_pspnet50()
        src["fcn.layer9.weird"] = torch.zeros(1)
        del src["conv6.bias"]
        with pytest.raises(KeyError):
            load_weights(net50, src, strict=True)
        rep = load_weights(net50, src, strict=False)
        assert rep.unexpected == ["fcn.layer9.weird"]
        assert rep.missing == ["conv6.bias"]

    def test_other_k_classifier(self):
        net = PSPNet({"depth": 50, "num_classes": 7})
        with pytest.raises(KeyError, match="mismatched"):
            load_weights(net, cross_season_pspnet50(), strict=True)
        rep = load_weights(net, cross_season_pspnet50(), strict=True, skip_classifier=True)
        assert "conv6.weight" in rep.allowed_missing


class TestTorchvisionLayout:
    def test_deep_stem_loads_cleanly(self, net50):
        src = torchvision_resnet50(deep_stem=True)
        assert detect_layout(src) == "torchvision"
        rep = load_weights(net50, src, strict=True)
        assert rep.ok
        assert len(rep.loaded) == len(src) - 2  # all but fc.weight / fc.bias
        sd = net50.state_dict()
        assert torch.equal(sd["backbone.layer2.3.conv3.weight"], src["layer2.3.conv3.weight"])
        assert torch.equal(sd["backbone.layer3.0.downsample.1.running_mean"], src["layer3.0.downsample.1.running_mean"])
        assert "conv5_4.weight" in rep.allowed_missing and "conv6.weight" in rep.allowed_missing

    def test_plain_stem_mismatches_reported(self, net50):
        src = torchvision_resnet50(deep_stem=False)
        with pytest.raises(KeyError):
            load_weights(net50, src, strict=True)
        rep = load_weights(net50, src, strict=False)
        bad = sorted(m.split(":")[0] for m in rep.mismatched)
        assert bad == ["backbone.conv1.weight", "backbone.layer1.0.conv1.weight", "backbone.layer1.0.downsample.0.weight"]
        assert "backbone.conv2.weight" in rep.missing and "backbone.bn3.weight" in rep.missing
        assert rep.unexpected == []
        assert torch.equal(net50.state_dict()["backbone.layer4.2.conv2.weight"], src["layer4.2.conv2.weight"])


def test_native_round_trip(tmp_path):
    net = PSPNet({"depth": 18, "num_classes": 5})
    torch.save({"model": net.state_dict(), "config": {"model": OmegaConf.to_container(net.conf)}}, tmp_path / "ck.pt")
    net2 = PSPNet.from_checkpoint(tmp_path / "ck.pt")
    assert net2.num_classes == 5 and not net2.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, net2.state_dict()[k])


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        PSPNet.from_checkpoint("/nonexistent/ck.pt")
