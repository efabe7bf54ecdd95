"""Networks of the FGSN package: the dilated deep-stem ResNet backbone and PSPNet."""
from .pspnet import PSPNet
from .resnet import DilatedResNet

__all__ = ["PSPNet", "DilatedResNet"]
