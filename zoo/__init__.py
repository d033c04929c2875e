"""antialiased-zoo: pretrained anti-aliased (BlurPool) CNNs for PyTorch.

>>> import zoo
>>> model = zoo.create("resnet50_aa4")          # anti-aliased ResNet-50, filter size 4
>>> baseline = zoo.create("resnet50")           # its torchvision twin
"""

from zoo import export
from zoo import timm_bridge as _timm_bridge  # noqa: F401  (registers the *_aaK models with timm)
from zoo.builder import create
from zoo.layers import BlurConv2d, BlurPool2d, MaxBlurPool2d, binomial_filter
from zoo.models.antialias import antialias
from zoo.preprocess import label_names, transforms
from zoo.registry import UnknownModelError, list_models
from zoo.weights import WeightsUnavailableError

__version__ = "0.1.0"

__all__ = [
    "BlurConv2d",
    "BlurPool2d",
    "MaxBlurPool2d",
    "UnknownModelError",
    "WeightsUnavailableError",
    "__version__",
    "antialias",
    "binomial_filter",
    "create",
    "export",
    "label_names",
    "list_models",
    "transforms",
]
