"""The project's one ResNet family (He et al., CVPR 2016), used by FGSN's PSPNet and by the APR baselines.

Module names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layer<n>.<b>.downsample.{0,1}``; the classifier ``fc`` is not built) or, with ``deep_stem``, its
"deep-base" variant (extra ``conv2``, ``bn2``, ``conv3``, ``bn3`` in the stem), so ImageNet checkpoints of
either layout load key by key (``fgsn.weights.load_resnet_weights``). Nothing is ever downloaded.

Options (one class, see :class:`ResNet`):

- ``depth``: 18 / 34 (basic blocks), 50 / 101 (bottlenecks), and 10 (one basic block per stage, CPU presets).
- ``base_width``: channels of the stem and of ``layer1``'s 3x3 convs (64 in the papers and in ImageNet files).
- ``deep_stem``: three 3x3 convs 3 -> w (stride 2), w -> w, w -> 2w instead of one 7x7 conv 3 -> w (stride 2);
  a ReLU after each BN, then the 3x3 stride-2 max pool in both cases.
- ``output_stride``: 32 (classification layout) or 16 / 8: the stages that would go beyond it keep stride 1
  and dilate all their 3x3 convs instead (2 for the first such stage, 4 for the second), as in PSPNet
  (Zhao et al., CVPR 2017), which uses 8 (713x713 in -> 90x90 out).
- ``stride_in_1x1``: bottlenecks put the stride in the 1x1 reduce conv (``conv1``, Caffe / PSPNet) instead of
  the 3x3 conv (``conv2``, torchvision's "v1.5").
- ``activation``: ``"relu"`` or ``"elu"`` (VLocNet replaces every ReLU by ELU).
- ``init``: ``"torch"`` (PyTorch's default layer initialisation) or ``"kaiming"`` (then every conv weight is
  drawn again from He's normal, fan-out mode).

Presets: :func:`dilated_resnet` (FGSN's PSPNet backbone: deep stem, output stride 8, stride in the 1x1 conv);
the APR baselines use the defaults with ``init="kaiming"``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

_DEPTHS = {10: ("basic", (1, 1, 1, 1)), 18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
           50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}


def _act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "elu":
        return nn.ELU(inplace=True)
    raise ValueError(f"activation must be 'relu' or 'elu', got {name!r}")


def _downsample(in_ch: int, out_ch: int, stride: int) -> nn.Sequential | None:
    """1x1 conv + BN projection of the residual when the block changes resolution or width, else None."""
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a residual connection (ResNet-10/18/34).

    Args:
        in_ch: input channels. width: channels of both convs (= output channels).
        stride: stride of the first conv. dilation: dilation (and padding) of both convs.
        activation: ``"relu"`` or ``"elu"``. stride_in_1x1: unused (bottlenecks only).
    """

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, dilation: int = 1, activation: str = "relu",
                 stride_in_1x1: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act = _act(activation)
        self.downsample = _downsample(in_ch, width * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> (B, width, H / stride, W / stride)."""
        h = self.act(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return self.act(h + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (dilated), 1x1 expand (x4), residual (ResNet-50/101).

    Args:
        in_ch: input channels. width: channels of the 1x1 reduce and 3x3 convs; output ``4 * width``.
        stride: block stride, carried by the 3x3 conv, or by the 1x1 reduce conv with ``stride_in_1x1``.
        dilation: dilation (and padding) of the 3x3 conv. activation: ``"relu"`` or ``"elu"``.
    """

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, dilation: int = 1, activation: str = "relu",
                 stride_in_1x1: bool = False):
        super().__init__()
        out = width * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_ch, width, 1, s1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, s3, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.act = _act(activation)
        self.downsample = _downsample(in_ch, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> (B, 4 width, H / stride, W / stride)."""
        h = self.act(self.bn1(self.conv1(x)))
        h = self.act(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return self.act(h + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """ResNet trunk without classifier (options in the module docstring).

    Stages: the stem (``conv1``, ``bn1`` [, ``conv2``, ``bn2``, ``conv3``, ``bn3``], activation, ``maxpool``;
    stride 4), ``layer1`` (stride 4), ``layer2`` (8), ``layer3`` (16), ``layer4`` (32), strides capped at
    ``output_stride``. VLocNet's Res2..Res5 and the Caffe PSPNet's ``layer2`` .. ``layer5`` are ``layer1`` ..
    ``layer4``.

    Args:
        depth: 10, 18, 34, 50 or 101.
        base_width: channels of the (last conv of the plain) stem and of ``layer1``'s 3x3 convs.
        activation: ``"relu"`` or ``"elu"``.
        in_channels: input channels (3 for RGB).
        deep_stem: three 3x3 convs (out channels w, w, 2w) instead of one 7x7 conv.
        output_stride: 32, 16 or 8.
        stride_in_1x1: bottlenecks stride in the 1x1 reduce conv instead of the 3x3 conv.
        init: ``"torch"`` (PyTorch defaults) or ``"kaiming"`` (He normal, fan-out, on every conv).
    Attributes:
        channels: output channels of (stem, layer1, layer2, layer3, layer4).
    Raises:
        ValueError: unsupported depth, activation, output stride or init.
    """

    def __init__(self, depth: int = 34, base_width: int = 64, activation: str = "relu", in_channels: int = 3,
                 deep_stem: bool = False, output_stride: int = 32, stride_in_1x1: bool = False,
                 init: str = "kaiming"):
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"ResNet output_stride must be 8, 16 or 32, got {output_stride}")
        if init not in ("torch", "kaiming"):
            raise ValueError(f"ResNet init must be 'torch' or 'kaiming', got {init!r}")
        kind, counts = _DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        w = base_width
        if deep_stem:
            self.conv1 = nn.Conv2d(in_channels, w, 3, 2, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(w)
            self.conv2 = nn.Conv2d(w, w, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(w)
            self.conv3 = nn.Conv2d(w, 2 * w, 3, 1, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(2 * w)
            ch = 2 * w
        else:
            self.conv1 = nn.Conv2d(in_channels, w, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(w)
            ch = w
        self.deep_stem = deep_stem
        self.act = _act(activation)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.channels = [ch]
        stride_so_far, dilation = 4, 1
        for i, n in enumerate(counts):
            stride = 2 if i > 0 else 1
            if stride_so_far * stride > output_stride:
                stride, dilation = 1, dilation * 2
            stride_so_far *= stride
            width = w * 2 ** i
            blocks = []
            for b in range(n):
                blocks.append(block(ch, width, stride if b == 0 else 1, dilation, activation, stride_in_1x1))
                ch = width * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.channels.append(ch)
        if init == "kaiming":
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, channels[0], H / 4, W / 4)."""
        h = self.act(self.bn1(self.conv1(x)))
        if self.deep_stem:
            h = self.act(self.bn2(self.conv2(h)))
            h = self.act(self.bn3(self.conv3(h)))
        return self.maxpool(h)

    def forward(self, x: torch.Tensor, upto: int = 4) -> list[torch.Tensor]:
        """Stage outputs.

        Args:
            x: (B, C, H, W) normalised image.
            upto: last stage to run (0 = stem only, 4 = ``layer4``).
        Returns:
            [stem, layer1, ..., layer<upto>]: (B, channels[i], H / s_i, W / s_i), s_i the stage's stride.
        Raises:
            ValueError: ``x`` is not 4-dimensional.
        """
        if x.ndim != 4:
            raise ValueError(f"ResNet input must be (B, C, H, W), got {tuple(x.shape)}")
        feats = [self.stem(x)]
        for i in range(1, upto + 1):
            feats.append(getattr(self, f"layer{i}")(feats[-1]))
        return feats


def dilated_resnet(depth: int = 101) -> ResNet:
    """FGSN's PSPNet backbone: deep stem, output stride 8 (``layer3`` dilation 2, ``layer4`` dilation 4),
    bottleneck stride in the 1x1 reduce conv (as the Caffe PSPNet), PyTorch default initialisation.

    Args:
        depth: 18, 34, 50 or 101.
    Raises:
        ValueError: unsupported depth.
    """
    if depth not in (18, 34, 50, 101):
        raise ValueError(f"Unsupported ResNet depth {depth}; choose one of [18, 34, 50, 101]")
    return ResNet(depth, deep_stem=True, output_stride=8, stride_in_1x1=True, init="torch")
