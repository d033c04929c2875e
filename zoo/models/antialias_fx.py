"""The ``torch.fx`` fallback of ``zoo.antialias``: place what the structural rules could not.

For each strided ``nn.Conv2d`` no structural rule placed, the smallest enclosing module that ``torch.fx`` traces
(from the conv's parent up to the root) becomes its *host*. In the host's graph the conv's output is followed along
single-user nodes through norm modules and then one activation (module, function or method); the blur goes after
the activation, else after the norms (strided 1x1 convs need no graph: the structural rule puts the blur before
them wherever they sit). The forward of every user module (not from torch, torchvision, timm or zoo) is also
traced and scanned for functional subsampling: ``F.max_pool2d`` / ``F.avg_pool2d`` follow the pool rules, anything
else strided (``F.conv2d``, a slice with a step, ``F.interpolate`` down) is reported. Hosts are replaced in their
parent by a ``torch.fx.GraphModule`` that keeps the host's children, parameters and buffers under the same names,
so state-dict keys do not change.

Nothing is changed by :func:`plan`; its :meth:`FxPlan.apply` does the rewrite, after the structural edits.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.graph_module import _USER_PRESERVED_ATTRIBUTES_KEY as _PRESERVED

__all__ = ["SUPPORTED", "FxPlan", "Makers", "is_library", "plan"]

_LIBRARIES = frozenset({"torch", "torchvision", "timm", "zoo"})
_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)
_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.Mish,
                nn.PReLU, nn.Hardtanh)  # fmt: skip
_ACT_FUNCTIONS = frozenset({F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.silu, F.gelu, F.hardswish, F.mish,
                            F.leaky_relu, F.elu, F.selu, F.celu, F.hardtanh})  # fmt: skip
_ACT_METHODS = frozenset({"relu", "relu_"})
_MAX_POOLS = frozenset({F.max_pool2d, torch.max_pool2d, F.max_pool2d_with_indices})
_CONVS = frozenset({F.conv2d, torch.conv2d})
SUPPORTED = (
    "supported: strided conv -> [norms] -> activation or strided conv -> norms (in a Sequential, a known block or a "
    "torch.fx-traceable block), strided 1x1 conv, MaxPool2d / AvgPool2d and F.max_pool2d / F.avg_pool2d"
)


def _max_sig(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False): ...
def _avg_sig(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
             divisor_override=None): ...  # fmt: skip
def _conv_sig(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1): ...
def _interp_sig(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False): ...  # fmt: skip


@dataclass(frozen=True)
class Makers:
    """Layer factories of one ``antialias`` call: ``blur(channels, stride)``, ``max_blur(kernel, stride, padding)``
    (a stride-1 max-pool, then the blur) and ``split(stride) -> (dense stride, blur stride)``."""

    blur: Callable[[int | None, tuple[int, int]], nn.Module]
    max_blur: Callable[[int, tuple[int, int], int], nn.Module]
    split: Callable[[tuple[int, int]], tuple[tuple[int, int], tuple[int, int]]]


@dataclass
class _Op:
    """One rewrite in a host graph: a new layer ``after`` a node, or ``replace`` a functional pool."""

    kind: str
    node: fx.Node
    name: str
    layer: nn.Module
    conv: nn.Conv2d | None = None
    dense: tuple[int, int] = (1, 1)


@dataclass
class _Host:
    path: str
    targets: dict[str, nn.Module] = field(default_factory=dict)  # path inside the host -> strided conv
    inline: set[int] = field(default_factory=set)  # ids of submodules traced through (they hold a target)


@dataclass
class FxPlan:
    """What the fx fallback will rewrite (``hosts``) and what it cannot place (``missing`` module paths with
    ``reasons``, and functional ops in ``ops_missing``)."""

    hosts: list[_Host]
    makers: Makers
    missing: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    ops_missing: list[str] = field(default_factory=list)

    def apply(self, model: nn.Module) -> nn.Module:
        """Rewrite every host, deepest first; return the model (a ``GraphModule`` when the root was a host)."""
        for host in sorted(self.hosts, key=lambda h: -(h.path.count(".") + 1 if h.path else 0)):  # root last
            block = model.get_submodule(host.path)
            graph = _trace(block, host.inline)
            ops, missing, bad = _analyze(host.path, block, graph, host.targets, self.makers)
            if missing or bad:
                raise RuntimeError(f"antialias: the fx graph of {host.path or '<root>'} changed: {missing + bad}")
            new = _rewrite(block, graph, ops)
            if not host.path:
                return new
            parent, _, key = host.path.rpartition(".")
            setattr(model.get_submodule(parent), key, new)
        return model


def is_library(m: nn.Module) -> bool:
    """A module class from torch, torchvision, timm or zoo (their blocks follow the structural rules)."""
    return type(m).__module__.split(".")[0] in _LIBRARIES


class _Tracer(fx.Tracer):
    """Traces through the modules in ``inline`` only; every other submodule is a leaf (called, not traced)."""

    def __init__(self, inline: set[int]) -> None:
        super().__init__()
        self.inline = inline

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return id(m) not in self.inline


def _trace(block: nn.Module, inline: set[int]) -> fx.Graph:
    graph = _Tracer(inline).trace(block)
    for node in graph.nodes:  # string annotations (``from __future__ import annotations``) would not script
        if isinstance(node.type, str):
            node.type = None
    return graph


def _single_input(block: nn.Module) -> bool:
    """Only a forward with one positional input is rewritten (the graph would bake in any other argument)."""
    params = list(inspect.signature(block.forward).parameters.values())
    return len(params) == 1 and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD)


def _short(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 90 else text[:87] + "..."


def _pair(v: object) -> tuple[int, int] | None:
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) in (1, 2) and all(isinstance(i, int) for i in v):
        return (v[0], v[-1])
    return None


def plan(model: nn.Module, unplaced: Iterable[str], makers: Makers) -> FxPlan:
    """Find a host for every strided module path in ``unplaced`` and scan user modules for functional subsampling.

    Nothing is modified; ``FxPlan.missing`` / ``ops_missing`` name what cannot be placed.
    """
    out = FxPlan([], makers)
    hosts: dict[str, _Host] = {}
    for path in unplaced:
        mod = model.get_submodule(path)
        if not path or not isinstance(mod, nn.Conv2d):
            out.missing.append(path)
            out.reasons.append(f"{path}: no rule for a strided {type(mod).__name__}")
            continue
        host, why = _find_host(model, path)
        if host is None:
            out.missing.append(path)
            out.reasons.append(f"{path}: {why}")
            continue
        entry = hosts.setdefault(host, _Host(host))
        entry.targets[path[len(host) + 1 :] if host else path] = mod
        parts = path.split(".")
        start = len(host.split(".")) + 1 if host else 1
        entry.inline |= {id(model.get_submodule(".".join(parts[:i]))) for i in range(start, len(parts))}
    inlined = set().union(*(h.inline for h in hosts.values())) if hosts else set()
    for path, mod in model.named_modules():  # user modules: scan their own forward for functional subsampling
        if path not in hosts and not is_library(mod) and id(mod) not in inlined:
            try:
                graph = _trace(mod, set())
            except Exception:
                continue
            if any(_functional(n) is not None for n in graph.nodes):
                hosts[path] = _Host(path)
    for path, host in hosts.items():
        block = model.get_submodule(path)
        if not _single_input(block):
            why = f"forward of {path or '<root>'} takes more than one input"
            out.missing += [_full(path, t) for t in host.targets]
            out.reasons += [f"{_full(path, t)}: {why}" for t in host.targets]
            if not host.targets:
                out.ops_missing.append(f"{path or '<root>'}: functional subsampling ({why})")
            continue
        try:
            graph = _trace(block, host.inline)
        except Exception as err:
            out.missing += [_full(path, t) for t in host.targets]
            out.reasons += [f"{_full(path, t)}: {path or '<root>'} could not be traced ({_short(err)})"
                            for t in host.targets]  # fmt: skip
            continue
        ops, missing, bad = _analyze(path, block, graph, host.targets, makers)
        out.missing += [p for p, _ in missing]
        out.reasons += [f"{p}: {why}" for p, why in missing]
        out.ops_missing += bad
        if ops:
            out.hosts.append(host)
    return out


def _full(host: str, rel: str) -> str:
    return f"{host}.{rel}" if host else rel


def _find_host(model: nn.Module, path: str) -> tuple[str | None, str]:
    """The smallest traceable single-input ancestor of the module at ``path``, or ``None`` and why not."""
    parts = path.split(".")
    failed: list[str] = []
    for depth in range(len(parts) - 1, -1, -1):
        host = ".".join(parts[:depth])
        block = model.get_submodule(host)
        inline = {id(model.get_submodule(".".join(parts[:i]))) for i in range(depth + 1, len(parts))}
        if not _single_input(block):
            failed.append(f"{host or '<root>'} (takes more than one input)")
            continue
        try:
            _trace(block, inline)
        except Exception as err:
            failed.append(f"{host or '<root>'} ({_short(err)})")
            continue
        return host, ""
    return None, "no enclosing block could be traced by torch.fx: " + ", ".join(failed)


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].args[:1] == (node,) else None


def _kind(node: fx.Node, block: nn.Module) -> str | None:
    """``norm``, ``act`` (an activation, or a norm holding one: timm's ``BatchNormAct2d``) or ``None``."""
    if node.op == "call_module":
        m = block.get_submodule(node.target)
        if isinstance(m, _NORMS):
            act = getattr(m, "act", None)
            return "act" if isinstance(act, nn.Module) and not isinstance(act, nn.Identity) else "norm"
        return "act" if isinstance(m, _ACT_MODULES) else None
    if node.op == "call_function" and node.target in _ACT_FUNCTIONS:
        return "act"
    if node.op == "call_method" and node.target in _ACT_METHODS:
        return "act"
    return None


def _blur_point(conv_node: fx.Node, block: nn.Module) -> fx.Node | None:
    """After the activation that follows ``conv_node`` through norms, else after its last norm; a branch ends the
    chain. ``None`` when neither a norm nor an activation follows the conv."""
    cur, last = conv_node, None
    while (nxt := _only_user(cur)) is not None and (kind := _kind(nxt, block)) is not None:
        if kind == "act":
            return nxt
        cur = last = nxt
    return last


def _functional(node: fx.Node) -> tuple[str, dict] | None:
    """``(kind, bound arguments)`` of a functional subsampling op: ``max`` / ``avg`` (placeable), ``bad``."""
    if node.op == "call_function" and node.target in _MAX_POOLS:
        a = inspect.signature(_max_sig).bind(*node.args, **node.kwargs)
        a.apply_defaults()
        return ("max", a.arguments) if _stride(a.arguments) != (1, 1) else None
    if node.op == "call_function" and node.target is F.avg_pool2d:
        a = inspect.signature(_avg_sig).bind(*node.args, **node.kwargs)
        a.apply_defaults()
        return ("avg", a.arguments) if _stride(a.arguments) != (1, 1) else None
    if node.op == "call_function" and node.target in _CONVS:
        a = inspect.signature(_conv_sig).bind(*node.args, **node.kwargs)
        a.apply_defaults()
        stride = a.arguments["stride"]
        return None if _pair(stride) == (1, 1) else ("bad", {"why": f"strided F.conv2d (stride {stride})"})
    if node.op == "call_function" and node.target is F.lp_pool2d:
        return ("bad", {"why": "F.lp_pool2d"})
    if node.op == "call_function" and node.target is F.interpolate:
        a = inspect.signature(_interp_sig).bind(*node.args, **node.kwargs)
        s = a.arguments.get("scale_factor")
        scales = s if isinstance(s, (tuple, list)) else [s]
        if any(isinstance(v, (int, float)) and v < 1 for v in scales):
            return ("bad", {"why": f"F.interpolate down (scale_factor {s})"})
    if node.op == "call_function" and node.target is operator.getitem and len(node.args) == 2:
        index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        steps = [s.step for s in index if isinstance(s, slice) and s.step not in (None, 1)]
        if steps:
            return ("bad", {"why": f"slicing with step {steps[0]}"})
    return None


def _stride(args: dict) -> tuple[int, int] | None:
    s = args["stride"]
    return _pair(args["kernel_size"]) if s is None or (isinstance(s, (list, tuple)) and not s) else _pair(s)


def _analyze(host: str, block: nn.Module, graph: fx.Graph, targets: dict[str, nn.Module], makers: Makers,
             ) -> tuple[list[_Op], list[tuple[str, str]], list[str]]:  # fmt: skip
    """The rewrites of one host graph, the targets it cannot place ``(path, why)`` and the functional
    subsampling ops it cannot place (``"host: node (why)"``)."""
    label = host or "<root>"
    ops: list[_Op] = []
    missing: list[tuple[str, str]] = []
    bad: list[str] = []
    for rel, conv in targets.items():
        nodes = [n for n in graph.nodes if n.op == "call_module" and n.target == rel]
        stride = (int(conv.stride[0]), int(conv.stride[1]))
        name = f"aa_{rel.replace('.', '_')}"
        point = _blur_point(nodes[0], block) if len(nodes) == 1 else None
        if len(nodes) != 1:
            missing.append((_full(host, rel), f"called {len(nodes)} times in the forward of {label}"))
        elif point is None:
            missing.append((_full(host, rel), f"no norm or activation follows it in the forward of {label}"))
        else:
            dense, rest = makers.split(stride)
            ops.append(_Op("after", point, name, makers.blur(conv.out_channels, rest), conv, dense))
    for node in graph.nodes:
        found = _functional(node)
        if found is None:
            continue
        kind, a = found
        stride = _stride(a) if kind != "bad" else None
        kernel = _pair(a.get("kernel_size"))
        plain = kind == "max" and isinstance(a["padding"], int) and _pair(a["dilation"]) == (1, 1)
        if plain and kernel and stride and not a["return_indices"]:
            k = kernel[0] if kernel[0] == kernel[1] else kernel
            ops.append(_Op("replace", node, f"aa_{node.name}", makers.max_blur(k, stride, a["padding"])))
        elif kind == "avg" and stride:
            ops.append(_Op("replace", node, f"aa_{node.name}", makers.blur(None, stride)))
        else:
            why = a.get("why", f"F.{kind}_pool2d with arguments no rule places")
            bad.append(f"{label}: {node.name} ({why})")
    return ops, missing, bad


def _rewrite(block: nn.Module, graph: fx.Graph, ops: list[_Op]) -> fx.GraphModule:
    """Apply ``ops`` to ``graph`` and build the ``GraphModule`` with ``block``'s children, parameters and buffers
    under the same names (so the state-dict keys do not change)."""
    taken = set(dir(block))
    new: dict[str, nn.Module] = {}
    for op in ops:
        name = "aa" if len(ops) == 1 and "aa" not in taken else op.name
        while name in taken or name in new:
            name += "_"
        new[name] = op.layer
        if op.conv is not None:
            op.conv.stride = op.dense
        if op.kind == "after":
            with graph.inserting_after(op.node):
                blurred = graph.call_module(name, (op.node,))
            op.node.replace_all_uses_with(blurred, delete_user_cb=lambda user, b=blurred: user is not b)
        else:
            with graph.inserting_after(op.node):
                pooled = graph.call_module(name, (op.node.args[0] if op.node.args else op.node.kwargs["input"],))
            op.node.replace_all_uses_with(pooled)
            graph.erase_node(op.node)
    graph.lint()

    def lookup(target: str) -> object:
        if target in new:
            return new[target]
        obj: object = block
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    root = {n.target: lookup(n.target) for n in graph.nodes if n.op in ("call_module", "get_attr")}
    gm = fx.GraphModule(root, graph, class_name=f"AA{type(block).__name__}")
    gm._modules.clear()
    gm._modules.update(block._modules)
    gm._modules.update(new)
    gm._parameters.clear()
    gm._parameters.update(block._parameters)
    gm._buffers.clear()
    gm._buffers.update(block._buffers)
    gm._non_persistent_buffers_set = set(block._non_persistent_buffers_set)
    kept = {}
    for key, value in block.__dict__.items():  # plain attributes and hooks of the block
        if (key not in gm.__dict__ or "hook" in key) and key not in ("forward", "graph", "code"):
            gm.__dict__[key] = value
            kept[key] = value
    # deepcopy rebuilds a GraphModule from its graph alone: keep every child (used or not) and attribute through it
    gm.meta[_PRESERVED] = {**gm._modules, **gm._parameters, **{k: v for k, v in kept.items() if "hook" not in k}}
    gm.train(block.training)
    return gm
