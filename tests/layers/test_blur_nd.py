"""BlurPool1d / BlurPool3d / MaxBlurPool1d / MaxBlurPool3d: a direct convolution as the reference,
circular shift commutation, the fallbacks, bad input, and TorchScript / torch.compile / ONNX."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.layers import PAD_MODES, BlurPool1d, BlurPool2d, BlurPool3d, MaxBlurPool1d, MaxBlurPool3d, blur_nd

ROUTES = ("bands", "slices", "reference")


def direct_filter(sizes: tuple[int, ...]) -> torch.Tensor:
    """The full binomial filter, built here from integer binomial coefficients (no code of the layer)."""
    filt = torch.ones((), dtype=torch.float64)
    for k in sizes:
        row = torch.tensor([math.comb(k - 1, i) for i in range(k)], dtype=torch.float64)
        filt = filt.unsqueeze(-1) * (row / row.sum())
    return filt


def direct_blur(x: torch.Tensor, sizes: tuple[int, ...], stride: tuple[int, ...], mode: str) -> torch.Tensor:
    """One ``F.pad`` over every axis with the official (floor, ceil) split, then one dense depthwise conv."""
    pads: list[int] = []
    for k in reversed(sizes):
        pads += [(k - 1) // 2, k // 2]
    x = F.pad(x, pads, mode="constant" if mode == "zero" else mode)
    c = x.shape[1]
    weight = direct_filter(sizes).to(x.dtype).expand(c, 1, *sizes)
    conv = F.conv1d if len(sizes) == 1 else F.conv3d
    return conv(x, weight, stride=stride, groups=c)


def run(layer: blur_nd._BlurPoolNd, x: torch.Tensor, route: str) -> torch.Tensor:
    """The layer's output through one of its three kernels."""
    if route == "reference":
        layer.impl = "reference"
        return layer(x)
    layer.impl = "fast"
    assert layer._route(x) == "bands"  # a CPU float input of moderate size takes the bands by default
    return layer(x) if route == "bands" else layer._separable(x, bands=False)


CASES_1D = [(k, s, n) for k in (1, 2, 3, 4, 5, 7) for s in (1, 2, 3) for n in (8, 13)]
CASES_3D = [
    (4, (2, 2, 2), (6, 7, 8)),
    ((4, 1, 1), (2, 1, 1), (8, 5, 5)),
    ((3, 4, 2), (1, 2, 3), (5, 9, 7)),
    ((1, 5, 3), (2, 3, 1), (7, 6, 6)),
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", PAD_MODES)
def test_1d_equals_direct_convolution(mode: str, route: str) -> None:
    torch.manual_seed(0)
    for k, s, n in CASES_1D:
        x = torch.randn(2, 3, n, dtype=torch.float64)
        out = run(BlurPool1d(filter_size=k, stride=s, pad_mode=mode), x, route)
        assert out.shape[-1] == math.ceil(n / s)
        torch.testing.assert_close(out, direct_blur(x, (k,), (s,), mode), rtol=0, atol=1e-12)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", PAD_MODES)
def test_3d_equals_direct_convolution(mode: str, route: str) -> None:
    torch.manual_seed(0)
    for k, s, shape in CASES_3D:
        sizes = (k,) * 3 if isinstance(k, int) else k
        x = torch.randn(2, 3, *shape, dtype=torch.float64)
        out = run(BlurPool3d(filter_size=k, stride=s, pad_mode=mode), x, route)
        assert out.shape[2:] == tuple(math.ceil(n / st) for n, st in zip(shape, s))
        torch.testing.assert_close(out, direct_blur(x, sizes, s, mode), rtol=0, atol=1e-12)


def test_max_blur_pool_is_dense_max_then_blur() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 8, 7, dtype=torch.float64)
    for mode in ("reflect", "zero"):
        m = MaxBlurPool3d(kernel_size=(3, 2, 2), stride=(2, 1, 2), padding=(1, 0, 0), pad_mode=mode)
        dense = F.max_pool3d(x, (3, 2, 2), stride=1, padding=(1, 0, 0))
        torch.testing.assert_close(m(x), direct_blur(dense, (4, 4, 4), (2, 1, 2), mode), rtol=0, atol=1e-6)
    y = torch.randn(2, 3, 20, dtype=torch.float64)
    dense = F.max_pool1d(y, 2, stride=1)
    torch.testing.assert_close(MaxBlurPool1d(3)(y), direct_blur(dense, (4,), (2,), "reflect"), rtol=0, atol=1e-6)


def test_circular_max_wraps_around() -> None:
    x = torch.randn(1, 2, 10)
    out = MaxBlurPool1d(kernel_size=3, padding=1, stride=1, filter_size=1, pad_mode="circular")(x)
    wrapped = torch.cat([x[..., -1:], x, x[..., :1]], dim=-1)
    assert torch.equal(out, F.max_pool1d(wrapped, 3, stride=1))


@pytest.mark.parametrize("route", ROUTES)
def test_1d_commutes_with_circular_shifts(route: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 24, dtype=torch.float64)
    for layer, s in ((BlurPool1d(filter_size=4, stride=2, pad_mode="circular"), 2),
                     (BlurPool1d(filter_size=5, stride=3, pad_mode="circular"), 3)):  # fmt: skip
        y = run(layer, x, route)
        for m in (1, 3, -5):
            shifted = run(layer, torch.roll(x, m * s, -1), route)
            torch.testing.assert_close(shifted, torch.roll(y, m, -1), rtol=0, atol=1e-12)
        # a shift that is not a multiple of the stride does not commute: the property is not vacuous
        off = run(layer, torch.roll(x, 1, -1), route)
        assert not any(torch.allclose(off, torch.roll(y, m, -1), atol=1e-3) for m in (0, 1))


@pytest.mark.parametrize("route", ROUTES)
def test_3d_commutes_with_circular_shifts_anisotropic(route: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 2, 8, 6, 9, dtype=torch.float64)
    for stride in ((2, 1, 1), (1, 2, 3)):
        layer = BlurPool3d(filter_size=(4, 3, 2), stride=stride, pad_mode="circular")
        y = run(layer, x, route)
        for d in ((1, 0, 0), (3, -1, 2), (-2, 2, 1)):
            before = tuple(di * si for di, si in zip(d, stride))
            shifted = run(layer, torch.roll(x, before, (2, 3, 4)), route)
            torch.testing.assert_close(shifted, torch.roll(y, d, (2, 3, 4)), rtol=0, atol=1e-12)


def test_max_blur_pools_commute_with_circular_shifts() -> None:
    torch.manual_seed(0)
    x1 = torch.randn(2, 3, 16)
    m1 = MaxBlurPool1d(kernel_size=2, pad_mode="circular")
    for m in (1, -3):
        torch.testing.assert_close(m1(torch.roll(x1, 2 * m, -1)), torch.roll(m1(x1), m, -1), rtol=0, atol=1e-6)
    x3 = torch.randn(1, 2, 8, 6, 6)
    m3 = MaxBlurPool3d(kernel_size=3, padding=1, stride=(2, 1, 2), pad_mode="circular")
    d = (1, -2, 2)
    before = (2, -2, 4)
    torch.testing.assert_close(
        m3(torch.roll(x3, before, (2, 3, 4))), torch.roll(m3(x3), d, (2, 3, 4)), atol=1e-6, rtol=0
    )
    # the -inf padding of the other modes breaks exact commutation at the border: the wrap is what makes it hold
    mz = MaxBlurPool1d(kernel_size=2, pad_mode="zero")
    assert not torch.allclose(mz(torch.roll(x1, 2, -1)), torch.roll(mz(x1), 1, -1), atol=1e-3)


def test_3d_agrees_with_blurpool2d_per_slice() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 12, 10)
    out = BlurPool3d(filter_size=(1, 4, 4), stride=(1, 2, 2))(x)
    frames = x.transpose(1, 2).reshape(8, 3, 12, 10)
    ref = BlurPool2d(filter_size=4, stride=2, impl="reference")(frames).reshape(2, 4, 3, 6, 5).transpose(1, 2)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_short_axes_fall_back_to_replicate_per_axis() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 2, 2, dtype=torch.float64)  # reflect needs pad < 2: k=5 pads 2
    torch.testing.assert_close(
        BlurPool1d(filter_size=5)(x), direct_blur(x, (5,), (2,), "replicate"), rtol=0, atol=1e-12
    )
    v = torch.randn(1, 2, 1, 8, 8, dtype=torch.float64)  # depth 1 replicates; H and W still reflect
    out = BlurPool3d(filter_size=4, pad_mode="reflect")(v)
    padded = F.pad(F.pad(v, (0, 0, 0, 0, 1, 2), mode="replicate"), (1, 2, 1, 2, 0, 0), mode="reflect")
    ref = F.conv3d(padded, direct_filter((4, 4, 4)).expand(2, 1, 4, 4, 4), stride=2, groups=2)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(BlurPool3d(filter_size=4, impl="reference")(v), out, rtol=0, atol=1e-12)


def test_long_signal_takes_the_convolution() -> None:
    x = torch.randn(1, 2, 2000)
    layer = BlurPool1d(filter_size=4)
    assert layer._route(x) == "reference"  # a 2000 x 1000 dense band would be wasteful
    torch.testing.assert_close(layer(x), direct_blur(x, (4,), (2,), "reflect"), rtol=0, atol=1e-6)


def test_non_contiguous_and_other_dtypes() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 8, 3).permute(0, 4, 1, 2, 3)  # (2, 3, 6, 5, 8), not contiguous
    ref = direct_blur(x.double(), (4, 4, 4), (2, 2, 2), "reflect")
    torch.testing.assert_close(BlurPool3d()(x).double(), ref, rtol=0, atol=1e-6)
    out = BlurPool3d()(x.to(torch.bfloat16))  # not a band dtype: the convolution
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=5e-2)


def test_gradients_through_the_bands() -> None:
    torch.manual_seed(0)
    x1 = torch.randn(1, 2, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(BlurPool1d(filter_size=3, pad_mode="reflect"), (x1,))
    x3 = torch.randn(1, 1, 5, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(BlurPool3d(filter_size=(2, 3, 4), stride=(1, 2, 2), pad_mode="circular"), (x3,))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: BlurPool1d(stride=0), "stride must be an int >= 1 or a tuple of 1"),
        (lambda: BlurPool3d(stride=(2, 2)), "stride must be an int >= 1 or a tuple of 3"),
        (lambda: BlurPool3d(filter_size=(4, 0, 4)), "filter_size must be an int >= 1"),
        (lambda: BlurPool1d(filter_size=0), "filter_size must be an integer >= 1"),
        (lambda: BlurPool1d(filter_size=True), "filter_size must be an int >= 1"),
        (lambda: BlurPool3d(pad_mode="wrap"), "unknown pad_mode 'wrap'; valid modes: reflect"),
        (lambda: BlurPool1d(impl="gpu"), "unknown blur mode 'gpu'"),
        (lambda: MaxBlurPool1d(kernel_size=2, padding=2), "padding must be at most half of kernel_size"),
        (lambda: MaxBlurPool3d(kernel_size=(2, 2)), "kernel_size must be an int >= 1 or a tuple of 3"),
        (lambda: MaxBlurPool3d(padding=-1), "padding must be an int >= 0"),
    ],
)
def test_bad_arguments(make, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_input_rank() -> None:
    with pytest.raises(ValueError, match=r"expected a 3-D input \(N, C, L\), got a 4-D one"):
        BlurPool1d()(torch.randn(1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"expected a 5-D input \(N, C, D, H, W\), got a 3-D one"):
        MaxBlurPool3d()(torch.randn(1, 2, 8))


LAYERS = [
    (lambda: BlurPool3d(filter_size=(4, 3, 1), stride=(2, 1, 3), pad_mode="circular"), (2, 3, 6, 7, 9)),
    (lambda: MaxBlurPool1d(kernel_size=3, padding=1, filter_size=5, pad_mode="reflect"), (2, 4, 30)),
]


@pytest.mark.parametrize(("make", "shape"), LAYERS)
def test_torchscript_script_and_trace(make, shape) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    layer, x = make(), torch.randn(shape)
    scripted = torch.jit.script(layer)
    traced = torch.jit.trace(layer, x)
    other = torch.randn(5, *shape[1:])  # another batch size
    for inp in (x, other):
        torch.testing.assert_close(scripted(inp), layer(inp), rtol=0, atol=1e-6)
        torch.testing.assert_close(traced(inp), layer(inp), rtol=0, atol=1e-6)
    layer.impl = "reference"
    torch.testing.assert_close(torch.jit.script(layer)(x), layer(x), rtol=0, atol=0)


@pytest.mark.parametrize(("make", "shape"), LAYERS)
def test_torch_compile_traces_the_slices(make, shape) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    layer, x = make(), torch.randn(shape)
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), layer(x), rtol=0, atol=1e-6)


def test_dynamo_onnx_export_matches_eager(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    layer = BlurPool3d(filter_size=(4, 3, 1), stride=(2, 1, 3), pad_mode="circular").eval()
    x = torch.randn(2, 3, 6, 7, 9)
    path = tmp_path / "blur3d.onnx"
    torch.onnx.export(layer, (x,), str(path), dynamo=True, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), layer(x), rtol=0, atol=1e-5)
