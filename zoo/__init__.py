"""antialiased-zoo: pretrained anti-aliased (BlurPool) CNNs for PyTorch.

>>> import zoo
>>> model = zoo.create("resnet50_aa4")          # anti-aliased ResNet-50, filter size 4
>>> baseline = zoo.create("resnet50")           # its torchvision twin
"""

from zoo.builder import create
from zoo.layers import BlurConv2d, BlurPool2d, MaxBlurPool2d, binomial_filter
from zoo.registry import UnknownModelError, list_models

__version__ = "0.1.0"

__all__ = [
    "BlurConv2d",
    "BlurPool2d",
    "MaxBlurPool2d",
    "UnknownModelError",
    "binomial_filter",
    "create",
    "list_models",
    "__version__",
]
