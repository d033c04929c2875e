"""``{arch}_aps``, ``{arch}_aa{K}_aps``: a zoo model (hand-built or torchvision family) with APS everywhere.

The model is built anti-aliased with ``aa_stem=True`` (filter size ``K``, or 1 = no low-pass for ``{arch}_aps``),
so every subsampling is a ``BlurPool2d``/``MaxBlurPool2d``/``BlurConv2d`` after a dense (stride-1) operation;
``to_aps`` then rewrites, in place and without changing a state-dict key:

- every padded conv to circular padding (``pad_mode="circular"`` for the blur as well);
- ``BlurPool2d(s)`` -> ``ApsDown2d`` (low-pass at stride 1, then APS by ``s``);
- ``MaxBlurPool2d`` -> ``ApsMaxPool2d`` (circularly padded dense max-pool, then ``ApsDown2d``);
- a conv still strided (AlexNet's conv1) -> ``ApsConv2d``;
- a ResNet block that subsamples -> ``ApsBasicBlock``/``ApsBottleneck``: its projection shortcut takes the
  phase the main path chose (``aps_select``), so the two branches stay aligned under any shift;
- a torchvision block with parallel strided branches (``PHASE_SHARED_BLOCKS``: RegNet, ShuffleNet V2, Inception
  v3's reduction blocks) -> an ``fx.GraphModule`` whose branches all take the first branch's phase
  (``share_phases``); Inception's zero-padded functional average pools -> circularly padded (``circular_pools``).

Exact invariance holds for the global-average-pool heads (ResNet, DenseNet, MobileNet). VGG and AlexNet flatten
an adaptive 7x7 (6x6) pool into an MLP, which is position-dependent: they are invariant when the last map is
1x1 (a 32x32 input). Offered for the hand-built families (``APS_FAMILIES``) and the torchvision CNN families
(``APS_TORCHVISION``).
"""

from __future__ import annotations

import operator

import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.layers import (
    ApsConv2d,
    ApsDown2d,
    ApsFollow2d,
    ApsLead2d,
    ApsMaxPool2d,
    BlurConv2d,
    BlurPool2d,
    CircularConv2d,
    MaxBlurPool2d,
    aps_select,
)
from zoo.models.resnet import BasicBlock, Bottleneck

__all__ = [
    "APS_FAMILIES",
    "APS_TORCHVISION",
    "FUNCTIONAL_POOL_BLOCKS",
    "PHASE_SHARED_BLOCKS",
    "ApsBasicBlock",
    "ApsBottleneck",
    "ApsProjection",
    "aps_family",
    "circular_pools",
    "share_phases",
    "to_aps",
]

torch.fx.wrap("aps_select")  # fx keeps the selection as one call (its padding branch reads the shape)

APS_FAMILIES: tuple[str, ...] = ("resnet", "vgg", "densenet", "mobilenet")
# torchvision CNN families (``zoo.models.torchvision_cnn``); blocks with parallel strided branches share one phase.
APS_TORCHVISION: tuple[str, ...] = (
    "efficientnet",
    "mnasnet",
    "googlenet",
    "squeezenet",
    "convnext",
    "regnet",
    "shufflenet",
    "inception",
)
# Blocks whose parallel branches each subsample (class qualified names, matched along the class's MRO, since
# ``zoo.antialias`` may have swapped a block's class for a subclass): every branch takes the phase of the first
# one in the block's execution order (``share_phases``).
PHASE_SHARED_BLOCKS: frozenset[str] = frozenset(
    {
        "torchvision.models.regnet.ResBottleneckBlock",  # projection shortcut + strided main path
        "torchvision.models.shufflenetv2.InvertedResidual",  # two strided branches, concatenated
        "torchvision.models.inception.InceptionB",  # two strided convs and a max-pool, concatenated
        "torchvision.models.inception.InceptionD",
    }
)
# Blocks that call ``F.avg_pool2d(x, 3, 1, padding=1)`` in ``forward`` (zero padding, which does not commute with
# circular shifts): the pool runs over a circularly padded map instead (``circular_pools``).
FUNCTIONAL_POOL_BLOCKS: frozenset[str] = frozenset(
    {
        "torchvision.models.inception.InceptionA",
        "torchvision.models.inception.InceptionC",
        "torchvision.models.inception.InceptionE",
    }
)


def aps_family(family: str, variant: dict) -> str | None:
    """The family name under which APS is offered for a registry entry, or ``None`` when it is not."""
    if family in APS_FAMILIES:
        return family
    sub = variant.get("family")
    return sub if family == "torchvision_cnn" and sub in APS_TORCHVISION else None


class ApsProjection(nn.Conv2d):
    """A ``BlurConv2d`` shortcut under APS: low-pass at stride 1, the main path's phase, then the 1x1 conv."""

    def __init__(self, conv: BlurConv2d) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, bias=conv.bias is not None)
        self.weight = conv.weight
        if conv.bias is not None:
            self.bias = conv.bias
        k = conv.blur.filter_size
        self.stride_aps = conv.blur.stride[0]
        self.blur: nn.Module = (
            BlurPool2d(conv.in_channels, filter_size=k, stride=1, pad_mode="circular") if k > 1 else nn.Identity()
        )

    def forward_phase(self, x: Tensor, phase: Tensor) -> Tensor:
        return self._conv_forward(aps_select(self.blur(x), phase, self.stride_aps), self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("ApsProjection needs the phase of its block's main path: call forward_phase(x, phase)")


class ApsBasicBlock(BasicBlock):
    """ResNet's basic block whose shortcut reuses the phase of the main path's APS."""

    def forward(self, x: Tensor) -> Tensor:
        out, phase = self.aa.forward_phase(self.relu(self.bn1(self.conv1(x))))
        if self.aa.keep_phase:
            self.aa._record(phase)
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample[1](self.downsample[0].forward_phase(x, phase)))


class ApsBottleneck(Bottleneck):
    """ResNet's bottleneck whose shortcut reuses the phase of the main path's APS."""

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out, phase = self.aa.forward_phase(self.relu(self.bn2(self.conv2(out))))
        if self.aa.keep_phase:
            self.aa._record(phase)
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample[1](self.downsample[0].forward_phase(x, phase)))


_PHASE_BLOCKS: dict[type[nn.Module], type[nn.Module]] = {BasicBlock: ApsBasicBlock, Bottleneck: ApsBottleneck}


class _BranchTracer(torch.fx.Tracer):
    """Traces a block down to its ``ApsDown2d`` calls: a module holding none is a leaf."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, ApsDown2d) or not any(isinstance(d, ApsDown2d) for d in m.modules())


def _listed(block: nn.Module, table: frozenset[str]) -> bool:
    return any(f"{c.__module__}.{c.__qualname__}" in table for c in type(block).__mro__)


def _pool_args(node: torch.fx.Node) -> tuple[torch.fx.Node, int, int, int]:
    """``(input, kernel, stride, padding)`` of an ``F.avg_pool2d`` call with integer arguments."""
    names = ("input", "kernel_size", "stride", "padding")
    args = {**dict(zip(names, node.args)), **node.kwargs}
    if set(args) - {*names, "count_include_pad"} or not args.get("count_include_pad", True):
        raise ValueError(f"APS cannot make this average pool circular: {node.format_node()}")
    kernel, stride, padding = args["kernel_size"], args.get("stride") or args["kernel_size"], args.get("padding", 0)
    if not all(isinstance(v, int) for v in (kernel, stride, padding)) or stride != 1:
        raise ValueError(f"APS needs a stride-1 average pool with integer sizes, got {node.format_node()}")
    return args["input"], kernel, stride, padding


def circular_pools(block: nn.Module) -> nn.Module:
    """``block`` as an ``fx.GraphModule`` whose zero-padded functional stride-1 average pools pool a circularly
    padded map instead (same size out). Module paths, hence state-dict keys, are kept."""
    graph = _BranchTracer().trace(block)
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is F.avg_pool2d:
            x, kernel, _, padding = _pool_args(node)
            if padding:
                with graph.inserting_before(node):
                    padded = graph.call_function(F.pad, (x, [padding] * 4), {"mode": "circular"})
                node.args, node.kwargs = (padded, kernel, 1, 0), {}
    graph.lint()
    return torch.fx.GraphModule(block, graph, class_name=f"Aps{type(block).__name__}")


def share_phases(block: nn.Module) -> nn.Module:
    """``block`` as an ``fx.GraphModule`` in which every ``ApsDown2d`` after the first (in execution order) is an
    ``ApsFollow2d`` at the first one's phase (an ``ApsLead2d``). Module paths, hence state-dict keys, are kept.
    A block with fewer than two subsamplings (a stride-1 block) is returned as it is."""
    if not any(isinstance(m, ApsDown2d) for m in block.modules()):
        return block
    graph = _BranchTracer().trace(block)
    downs = [n for n in graph.nodes if n.op == "call_module" and isinstance(block.get_submodule(n.target), ApsDown2d)]
    if len(downs) < 2:
        return block
    lead = downs[0]
    leader = block.get_submodule(lead.target)
    for node in downs[1:]:
        down = block.get_submodule(node.target)
        if down.stride != leader.stride:
            raise ValueError(f"{type(block).__name__}: branches subsample by {leader.stride} and {down.stride}")
    leader.__class__ = ApsLead2d
    with graph.inserting_after(lead):
        out = graph.call_function(operator.getitem, (lead, 0))
    lead.replace_all_uses_with(out, delete_user_cb=lambda user: user is not out)
    with graph.inserting_after(out):
        phase = graph.call_function(operator.getitem, (lead, 1))
    for node in downs[1:]:
        parent, _, key = node.target.rpartition(".")
        owner = block.get_submodule(parent) if parent else block
        setattr(owner, key, ApsFollow2d(owner.get_submodule(key)))
        node.args = (*node.args, phase)
    graph.lint()
    return torch.fx.GraphModule(block, graph, class_name=f"Aps{type(block).__name__}")


def _rewrite_blocks(model: nn.Module) -> None:
    for name, child in list(model.named_children()):
        if _listed(child, PHASE_SHARED_BLOCKS):
            setattr(model, name, share_phases(child))
        elif _listed(child, FUNCTIONAL_POOL_BLOCKS):
            setattr(model, name, circular_pools(child))
        else:
            _rewrite_blocks(child)


def _replacement(module: nn.Module, p: int) -> nn.Module | None:
    if isinstance(module, MaxBlurPool2d):
        b = module.blur
        return ApsMaxPool2d(b.channels or 0, module.kernel_size, module.padding, b.filter_size, b.stride[0], p)
    if isinstance(module, BlurConv2d):
        return ApsProjection(module)
    if isinstance(module, BlurPool2d) and module.stride != (1, 1):
        if module.stride[0] != module.stride[1]:
            raise ValueError(f"APS needs equal strides on both axes, got {module.stride}")
        return ApsDown2d(module.channels or 0, module.filter_size, module.stride[0], p)
    if type(module) is nn.Conv2d and module.stride != (1, 1):
        return ApsConv2d(module, 1, p)
    if type(module) is nn.Conv2d and not _keeps_size(module):
        return CircularConv2d(module)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) and module.stride not in (1, (1, 1)):
        raise ValueError(f"APS cannot place the strided pool {module}")
    return None


def _keeps_size(conv: nn.Conv2d) -> bool:
    """A stride-1 conv whose (symmetric, numeric) padding keeps the map's size."""
    if isinstance(conv.padding, str):
        return conv.padding == "same"
    return all(2 * p == d * (k - 1) for p, d, k in zip(conv.padding, conv.dilation, conv.kernel_size))


def _swap(parent: nn.Module, p: int) -> None:
    for name, child in list(parent.named_children()):
        new = _replacement(child, p)
        if new is not None:
            setattr(parent, name, new)
        else:
            _swap(child, p)


def _circular_pad(module: nn.Module) -> int:
    """The widest circular padding ``module`` itself applies (0 when none)."""
    if isinstance(module, (CircularConv2d, ApsMaxPool2d)):
        return max(module.pads)
    if isinstance(module, BlurPool2d) and module.pad_mode == "circular":
        return max(module.pads)
    if type(module) is nn.Conv2d and module.padding_mode == "circular":
        return max(module.padding)
    return 0


def _min_input(model: nn.Module) -> int:
    """Smallest input side: every map keeps its size until APS divides it, and a circular pad of ``p`` needs a map
    of at least ``p`` pixels. Walks the modules in registration order (the order the families run them)."""
    reduction, need, done = 1, 1, set()
    for module in model.modules():
        if isinstance(module, ApsProjection):  # its blur runs before the phase: on the block's input map
            need = max(need, reduction // module.stride_aps * _circular_pad(module.blur))
            done.add(id(module.blur))
        if isinstance(module, ApsFollow2d):  # a parallel branch, on the map its leader (counted first) divided
            need = max(need, reduction // module.stride * _circular_pad(module.blur))
            done.add(id(module.blur))
        if isinstance(module, ApsDown2d):  # its blur runs before it subsamples
            need = max(need, reduction * _circular_pad(module.blur))
            done.add(id(module.blur))
        if id(module) not in done:
            need = max(need, reduction * _circular_pad(module))
        if isinstance(module, ApsDown2d):
            reduction *= module.stride
    return max(need, reduction)


def to_aps(model: nn.Module, p: int = 2) -> nn.Module:
    """Rewrite an anti-aliased hand-built model (built with ``aa_stem=True``) for APS; see the module docstring."""
    for module in model.modules():
        cls = _PHASE_BLOCKS.get(type(module))
        if cls is not None and not isinstance(module.aa, nn.Identity):
            module.__class__ = cls
    _swap(model, p)
    _rewrite_blocks(model)
    for module in model.modules():
        if type(module) is nn.Conv2d and any(module.padding) and module.padding_mode == "zeros":
            module.padding_mode = "circular"
    model.min_input_size = _min_input(model)
    return model
