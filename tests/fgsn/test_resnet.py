"""The one ResNet family (fgsn.models.resnet): the options FGSN's PSPNet and the APR baselines use."""
import pytest
import torch

from fgsn.models.resnet import ResNet, dilated_resnet


class TestResNet:
    @pytest.mark.parametrize("output_stride", [8, 16, 32])
    def test_stage_shapes(self, output_stride):
        net = ResNet(10, base_width=8, output_stride=output_stride).eval()
        feats = net(torch.zeros(1, 3, 64, 64))
        strides = [4, 4, 8, min(16, output_stride), min(32, output_stride)]
        assert [f.shape[1] for f in feats] == net.channels == [8, 8, 16, 32, 64]
        assert [64 // f.shape[-1] for f in feats] == strides

    def test_dilated_preset(self):
        net = dilated_resnet(50)
        assert net.channels == [128, 256, 512, 1024, 2048]
        assert net.layer2[0].conv1.stride == (2, 2) and net.layer2[0].conv2.stride == (1, 1)  # Caffe stride
        assert net.layer3[1].conv2.dilation == (2, 2) and net.layer4[0].conv2.dilation == (4, 4)
        assert "conv3.weight" in net.state_dict() and net.conv1.kernel_size == (3, 3)
        plain = ResNet(50)  # torchvision v1.5 layout: stride in the 3x3 conv
        assert plain.layer2[0].conv1.stride == (1, 1) and plain.layer2[0].conv2.stride == (2, 2)
        assert plain.conv1.kernel_size == (7, 7) and "conv3.weight" not in plain.state_dict()

    def test_elu(self):
        net = ResNet(10, base_width=4, activation="elu")
        assert isinstance(net.act, torch.nn.ELU) and isinstance(net.layer1[0].act, torch.nn.ELU)

    @pytest.mark.parametrize("kwargs", [{"depth": 12}, {"activation": "tanh"}, {"output_stride": 4}, {"init": "x"}])
    def test_invalid_options(self, kwargs):
        with pytest.raises(ValueError):
            ResNet(**{"depth": 10, **kwargs})
        with pytest.raises(ValueError, match="depth"):
            dilated_resnet(10)

    def test_input_shape_checked(self):
        with pytest.raises(ValueError, match=r"\(3, 8, 8\)"):
            ResNet(10, base_width=4)(torch.zeros(3, 8, 8))
