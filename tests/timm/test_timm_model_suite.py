"""timm's model test suite (tests/test_models.py of pytorch-image-models) applied to the zoo's
registered models through ``timm.create_model``: one model per family by default; every ``_aa4``
model with every check and every other ``_aaK`` with forward/backward under ``slow``."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from support.threads import one_thread  # noqa: F401 (autouse fixture)
from timm.models import FeatureInfo, get_notrace_functions, get_notrace_modules
from timm_testlib import AA4_NAMES, FAMILY_REPS, SWEEP_NAMES, rand_input, small_size, with_slow
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

FULL = with_slow(FAMILY_REPS, AA4_NAMES)  # every check
FWD_BWD = with_slow(FAMILY_REPS, SWEEP_NAMES)  # forward + backward

pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize("name", FWD_BWD)
def test_forward_and_backward(name: str) -> None:
    """Forward (eval, no NaN, grad checkpointing gives the same output); backward with
    ``num_classes=42`` where every parameter gets a gradient."""
    model = timm.create_model(name).eval()
    size = small_size(model, 64 if name.endswith("_aa4") else 32)  # other filter sizes: smaller inputs
    x = rand_input(size, batch=1)
    with torch.no_grad():
        out = model(x)
        model.set_grad_checkpointing()
        out2 = model(x)
    assert out.shape == (1, 1000) and not torch.isnan(out).any()
    torch.testing.assert_close(out2, out, rtol=1e-4, atol=1e-5)

    model = timm.create_model(name, num_classes=42).train()
    out = model(rand_input(size, batch=2))
    out.mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"no gradient for {no_grad[:5]}"
    assert out.shape == (2, 42) and not torch.isnan(out).any()


@pytest.mark.parametrize("name", FULL)
def test_default_cfg(name: str) -> None:
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    state = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state and f"{cfg['classifier']}.weight" in state
    assert model.num_classes == 1000 and model.num_features > 0 and model.head_hidden_size > 0
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert tuple(feats.shape[-2:]) == tuple(cfg["pool_size"])
        assert feats.shape[1] == model.num_features
        assert pre.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0
        out = model(x)
        assert out.shape == pre.shape
        model.reset_classifier(0, "")
        out = model(x)
        assert out.dim() == 4 and tuple(out.shape[-2:]) == tuple(cfg["pool_size"])
        model = timm.create_model(name, num_classes=0, global_pool="").eval()
        assert tuple(model(x).shape[-2:]) == tuple(cfg["pool_size"])


_SLOW = pytest.mark.slow
_WRAPPER_REPS = ["resnet18_aa4", "mobilenet_v3_small_aa4"]  # getter / hook wrappers in the default run
FEATURE_CASES = [
    *[(n, "list") for n in FAMILY_REPS],
    *[pytest.param(n, "list", marks=_SLOW) for n in AA4_NAMES if n not in FAMILY_REPS],
    *[(n, cls) for n in _WRAPPER_REPS for cls in ("getter", "hook")],
    *[pytest.param(n, cls, marks=_SLOW) for n in FAMILY_REPS if n not in _WRAPPER_REPS for cls in ("getter", "hook")],
]


@pytest.mark.parametrize(("name", "feature_cls"), FEATURE_CASES)
def test_features_only(name: str, feature_cls: str) -> None:
    """timm's wrappers (FeatureListNet, FeatureGetterNet, FeatureHookNet): channels and reductions match."""
    model = timm.create_model(name, features_only=True, feature_cls=feature_cls).eval()
    assert len(model.feature_info) >= 3
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    size = small_size(model, 96)
    with torch.no_grad():
        outs = model(rand_input(size, batch=1))
    assert len(outs) == len(channels)
    for c, r, o in zip(channels, reductions, outs):
        assert o.shape[1] == c
        assert o.shape[-1] <= math.ceil(size / r) + 1 and o.shape[-2] <= math.ceil(size / r) + 1
        assert not torch.isnan(o).any()


@pytest.mark.parametrize("name", with_slow(["resnet18_aa4", "densenet121_aa4", "mobilenet_v3_small_aa4"], FAMILY_REPS))
def test_features_only_out_indices_match_model(name: str) -> None:
    """Selected levels (negative indices too) are exactly the full model's intermediate maps."""
    torch.manual_seed(0)
    base = timm.create_model(name).eval()
    torch.manual_seed(0)  # same seed, same construction order: the same weights
    feats = timm.create_model(name, features_only=True, out_indices=(1, -1)).eval()
    levels = len(base.feature_info)
    assert feats.feature_info.reduction() == [base.feature_info[1]["reduction"], base.feature_info[-1]["reduction"]]
    x = rand_input(small_size(base, 96), batch=1)
    with torch.no_grad():
        want = base.forward_intermediates(x, indices=[1, levels - 1], intermediates_only=True)
        got = feats(x)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("name", FULL)
def test_forward_intermediates(name: str) -> None:
    model = timm.create_model(name).eval()
    info = FeatureInfo(model.feature_info, len(model.feature_info))
    size = small_size(model, 96)
    x = rand_input(size, batch=1)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, output_fmt="NCHW")
        assert len(inter) == len(info.channels()) >= 3
        for c, r, o in zip(info.channels(), info.reduction(), inter):
            assert o.shape[1] == c and o.shape[-1] <= math.ceil(size / r) + 1
        torch.testing.assert_close(final, model.forward_features(x))
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True, stop_early=True)
        assert [o.shape for o in last_two] == [o.shape for o in inter[-2:]]


@pytest.mark.parametrize("name", FULL)
def test_torchscript(name: str) -> None:
    with timm.set_scriptable(True):
        model = timm.create_model(name).eval()
    scripted = torch.jit.script(model)
    x = rand_input(small_size(model), batch=1)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


def _fx_model(model: torch.nn.Module, train: bool = False) -> torch.nn.Module:
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs
    )


@pytest.mark.parametrize("name", FULL)
def test_fx_forward_and_backward(name: str) -> None:
    model = timm.create_model(name).eval()
    x = rand_input(small_size(model), batch=1)
    with torch.no_grad():
        want = model(x)
        got = next(iter(_fx_model(model)(x).values()))
        traced = torch.fx.symbolic_trace(model)(x)
    assert torch.equal(got, want) and torch.equal(traced, want)

    model = timm.create_model(name, num_classes=42).train()
    n_params = sum(p.numel() for p in model.parameters())
    fx_model = _fx_model(model, train=True)
    out = next(iter(fx_model(rand_input(small_size(model), batch=2)).values()))
    out.mean().backward()
    assert out.shape == (2, 42)
    assert sum(p.grad.numel() for p in fx_model.parameters() if p.grad is not None) == n_params


@pytest.mark.parametrize("name", FULL)
def test_fx_torchscript(name: str) -> None:
    """timm's fx + TorchScript check: the fx feature extractor scripts and gives the eager output."""
    with timm.set_scriptable(True):
        model = timm.create_model(name).eval()
    scripted = torch.jit.script(_fx_model(model))
    x = rand_input(small_size(model), batch=1)
    with torch.no_grad():
        torch.testing.assert_close(next(iter(scripted(x).values())), model(x), rtol=0, atol=0)
