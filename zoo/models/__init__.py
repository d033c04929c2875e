"""Model families: one class per family plus a table of variants."""

from zoo.models._contract import ZooModel
from zoo.models.densenet import DenseNet
from zoo.models.mobilenet import MobileNetV2, MobileNetV3
from zoo.models.resnet import ResNet
from zoo.models.vgg import VGG

__all__ = ["VGG", "DenseNet", "MobileNetV2", "MobileNetV3", "ResNet", "ZooModel"]
