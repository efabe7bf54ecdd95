"""Networks of the FGSN package: the dilated deep-stem ResNet backbone and PSPNet."""
from .pspnet import PSPNet
from .resnet import ResNet, dilated_resnet

__all__ = ["PSPNet", "ResNet", "dilated_resnet"]
