"""U-Nets on any zoo classification encoder: ``zoo.create("unet_{encoder}", num_classes=C)``.

The encoder is the zoo model ``{encoder}`` built without a head; its ``feature_info`` levels (reductions 2, 4,
8, 16, 32 for most families; ConvNeXt starts at 4, SqueezeNet stops at 16) are the skip connections. The
decoder goes from the deepest level back up: at each level it upsamples the decoded map by the reduction ratio,
concatenates the encoder map of that level and runs two 3x3 conv-BN-ReLU; a last upsampling returns to the input
resolution and a 1x1 conv gives ``num_classes`` logits per pixel. Upsampling:

* baseline encoder (``unet_resnet18``): nearest-neighbour x2, then the convs (the classic U-Net decoder);
* anti-aliased encoder (``unet_resnet18_aa4``): ``BlurUpsample2d`` with the encoder's filter size;
* APS encoder (``unet_resnet18_aps``, ``unet_resnet18_aa4_aps``): APS unpooling. Each encoder ``ApsDown2d``
  records the phase it chose; the decoder puts the map back at that phase (``aps_unpool``, zeros elsewhere, gain
  ``s*s``), then blurs it (circular binomial filter, when ``K > 1``). With circular padding everywhere the U-Net
  is exactly equivariant: ``f(roll(x, d)) == roll(f(x), d)`` for every integer ``d`` (input sides multiples of
  32). The phases travel through module attributes, so TorchScript, ``torch.jit.trace``, fx and the ONNX
  exporters are refused with an error (a captured graph would freeze one input's phases and give wrong outputs
  for every other input); ``torch.compile`` gives eager's outputs (tested);

The decoder convs pad like the encoder (``pad_mode``; ``reflect`` is used as zero padding in the decoder convs,
``circular`` as circular padding).

Sizes: the output has the input's size. An input whose sides are not multiples of the deepest reduction (32) is
padded on the bottom/right with ``pad_mode`` (replicate for a map too small to reflect) up to the next multiple
and the logits are cropped back. The minimum input is the encoder's ``min_input_size``.

Weights: the encoder's modules keep their own names under ``encoder.{level}.{name}`` (dots in a trunk name become
``_``, e.g. ``features_3``); ``load_encoder_state_dict`` loads a classification state dict of the encoder into it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from zoo.layers import ApsDown2d, BlurPool2d, aps_unpool
from zoo.layers.kernels import pad as pad_map
from zoo.layers.upsample import BlurUpsample2d
from zoo.models._helpers import forget_stale_builtins
from zoo.registry import ModelEntry, get_entry, register_resolver

__all__ = ["PREFIX", "UNet", "unet_entry"]

PREFIX = "unet_"


def _sanitize(name: str) -> str:
    return name.replace(".", "_")


def _conv_pad_mode(pad_mode: str) -> str:
    return "circular" if pad_mode == "circular" else "zeros"


class _ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, pad_mode: str) -> None:
        mode = _conv_pad_mode(pad_mode)
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, padding_mode=mode, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, padding_mode=mode, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class _ApsUnpool(nn.Module):
    """Undo the APS subsamplings of one encoder stage (last first), each followed by a circular blur."""

    def __init__(self, downs: list[ApsDown2d], filter_size: int) -> None:
        super().__init__()
        self.downs = downs  # not registered as children: the encoder owns them
        self.blur: nn.Module = (
            BlurPool2d(filter_size=filter_size, stride=1, pad_mode="circular") if filter_size > 1 else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        for down in reversed(self.downs):
            if down.last_phase is None or down.last_phase.shape[0] != x.shape[0]:
                raise RuntimeError("APS unpooling needs the phases of the encoder pass that produced this map")
            x = self.blur(aps_unpool(x, down.last_phase, down.stride) * float(down.stride**2))
        return x


@torch.fx.wrap
def _match_size(y: Tensor, ref: Tensor) -> Tensor:
    """``y`` resized (bilinear) to ``ref``'s height and width when they differ: encoders with unpadded or
    ``ceil_mode`` layers (SqueezeNet, AlexNet) give maps that are not an exact fraction of the input."""
    if y.shape[-2] == ref.shape[-2] and y.shape[-1] == ref.shape[-1]:
        return y
    return nn.functional.interpolate(y, size=[ref.shape[-2], ref.shape[-1]], mode="bilinear", align_corners=False)


def _stage_downs(stage: nn.Module) -> list[ApsDown2d]:
    return [m for m in stage.modules() if isinstance(m, ApsDown2d)]


def _refuse_export(name: str) -> None:
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.fx._symbolic_trace.is_fx_symbolic_tracing():
        raise RuntimeError(
            f"{name}: an APS U-Net passes the encoder's phases through module attributes and runs in eager mode "
            "only; a traced, compiled or exported graph would freeze one input's phases"
        )


def _upsampler(ratio: int, filter_size: int | None, pad_mode: str) -> nn.Module:
    if ratio == 1:
        return nn.Identity()
    if filter_size is None:
        return nn.Upsample(scale_factor=float(ratio), mode="nearest")
    return BlurUpsample2d(scale=ratio, filter_size=filter_size, pad_mode=pad_mode)


class UNet(nn.Module):
    """A U-Net whose encoder is the zoo model ``encoder`` (any classification name); see the module docstring."""

    classifier_name = "head"  # the per-pixel classifier: re-initialised when weights have another class count

    def __init__(
        self,
        name: str,
        encoder: str,
        num_classes: int = 2,
        in_chans: int = 3,
        filter_size: int | None = None,
        pad_mode: str | None = None,
        decoder_channels: int = 256,
    ) -> None:
        super().__init__()
        from zoo.builder import create

        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1 (segmentation classes), got {num_classes!r}")
        kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_chans}
        if filter_size is not None:
            kwargs["filter_size"] = filter_size
        if pad_mode is not None:
            kwargs["pad_mode"] = pad_mode
        enc = create(encoder, **kwargs)
        self.name = name
        self.encoder_name = encoder
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.filter_size = enc.filter_size
        self.pad_mode = enc.pad_mode
        self.pretrained_cfg: dict[str, Any] = {}
        info = list(enc.feature_info)
        self.reductions = [int(level["reduction"]) for level in info]
        self.multiple = self.reductions[-1]
        self.min_input_size = max(int(enc.min_input_size), 1)
        self._encoder_keys: dict[str, str] = {}
        stages: list[nn.Sequential] = []
        current = nn.Sequential()
        level = 0
        for trunk_name, module in enc.trunk():
            current.add_module(_sanitize(trunk_name), module)
            self._encoder_keys[trunk_name] = f"encoder.{level}.{_sanitize(trunk_name)}"
            if level < len(info) and trunk_name == info[level]["module"]:
                stages.append(current)
                current = nn.Sequential()
                level += 1
        if level != len(info):
            raise RuntimeError(f"{encoder}: feature_info modules not found in the trunk (got {level} of {len(info)})")
        self.encoder = nn.ModuleList(stages)  # modules after the last level (if any) are not needed
        self.first_conv = self._encoder_key(enc.first_conv)  # its input channels adapt to ``in_chans`` on load
        chans = [int(level["num_chs"]) for level in info]
        width = [min(decoder_channels, max(16, c)) for c in chans]
        self.aps = getattr(enc, "sampling", "stride") == "aps"
        downs = [_stage_downs(stage) for stage in stages] if self.aps else []
        for stage_downs in downs:
            for down in stage_downs:
                down.keep_phase = True
        if self.aps:
            for lvl, stage_downs in enumerate(downs):
                total = 1
                for down in stage_downs:
                    total *= down.stride
                want = self.reductions[lvl] // (self.reductions[lvl - 1] if lvl else 1)
                if total != want:
                    raise RuntimeError(f"{encoder}: stage {lvl} subsamples by {total}, feature_info says {want}")

        def up(lvl: int, ratio: int) -> nn.Module:
            if self.aps:
                return _ApsUnpool(downs[lvl], int(self.filter_size or 1))
            return _upsampler(ratio, self.filter_size, self.pad_mode)

        ups: list[nn.Module] = []
        blocks: list[nn.Module] = []
        below = chans[-1]
        for lvl in range(len(info) - 2, -1, -1):
            ratio = self.reductions[lvl + 1] // self.reductions[lvl]
            ups.append(up(lvl + 1, ratio))
            blocks.append(_ConvBlock(below + chans[lvl], width[lvl], self.pad_mode))
            below = width[lvl]
        self.ups = nn.ModuleList(ups)
        self.blocks = nn.ModuleList(blocks)
        self.final_up = up(0, self.reductions[0])
        self.final_block = _ConvBlock(below + in_chans, max(16, below // 2), self.pad_mode)
        self.head = nn.Conv2d(max(16, below // 2), num_classes, 1)

    @classmethod
    def build_args(cls) -> set[str]:
        """What ``zoo.create("unet_...", ...)`` accepts."""
        return {"num_classes", "in_chans", "filter_size", "pad_mode", "decoder_channels"}

    def default_pretrained_cfg(self, name: str) -> dict[str, Any]:
        return {"architecture": name, "encoder": self.encoder_name, "task": "segmentation", "num_classes": 0}

    @torch.jit.ignore
    def load_encoder_state_dict(self, state_dict: dict[str, Tensor], strict: bool = False) -> list[str]:
        """Load the encoder's classification state dict (its own key names); returns the keys not used."""
        mapped: dict[str, Tensor] = {}
        unused: list[str] = []
        for key, value in state_dict.items():
            try:
                mapped[self._encoder_key(key)] = value
            except KeyError:
                unused.append(key)
        missing, _ = self.load_state_dict(mapped, strict=False)
        missing = [k for k in missing if k.startswith("encoder.")]
        if strict and missing:
            raise KeyError(f"{self.name}: encoder keys missing from the state dict: {', '.join(missing[:5])}")
        return unused

    def _encoder_key(self, key: str) -> str:
        """The U-Net's name of the encoder's module or parameter ``key`` (a classification-model name)."""
        for trunk_name, new in self._encoder_keys.items():
            if key == trunk_name or key.startswith(trunk_name + "."):
                return new + key[len(trunk_name) :]
        raise KeyError(f"{self.encoder_name}: {key} is not in the encoder's trunk")

    def _pad_input(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2], x.shape[-1]
        ph = (self.multiple - h % self.multiple) % self.multiple
        pw = (self.multiple - w % self.multiple) % self.multiple
        if ph == 0 and pw == 0:
            return x
        mode = self.pad_mode
        if mode == "reflect" and (ph >= h or pw >= w):
            mode = "replicate"
        if mode == "circular" and (ph > h or pw > w):
            mode = "replicate"
        return pad_map(x, (0, pw, 0, ph), mode)

    def forward(self, x: Tensor) -> Tensor:
        if self.aps:
            return self._forward_aps(x)
        return self._forward(x)

    def __prepare_scriptable__(self) -> UNet:
        if self.aps:
            raise RuntimeError(f"{self.name}: an APS U-Net runs in eager mode only; torch.jit.script is refused")
        return forget_stale_builtins(self)

    @torch.jit.unused
    def _forward_aps(self, x):  # unannotated: TorchScript cannot resolve an unused method's string annotations
        """Eager only (see the module docstring): refuses tracing, fx, compile and export."""
        _refuse_export(self.name)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"{self.name} expects (N, {self.in_chans}, H, W) input, got {list(x.shape)}")
        if min(x.shape[-2], x.shape[-1]) < self.min_input_size:
            raise ValueError(f"{self.name} needs H, W >= {self.min_input_size}, got {list(x.shape[-2:])}")
        h, w = x.shape[-2], x.shape[-1]
        inp = self._pad_input(x)
        feats: list[Tensor] = []
        y = inp
        for stage in self.encoder:
            y = stage(y)
            feats.append(y)
        y = feats[-1]
        for i, (up, block) in enumerate(zip(self.ups, self.blocks)):
            skip = feats[len(feats) - 2 - i]
            y = block(torch.cat([_match_size(up(y), skip), skip], 1))
        y = self.final_block(torch.cat([_match_size(self.final_up(y), inp), inp], 1))
        return self.head(y)[:, :, :h, :w]


def unet_entry(name: str) -> ModelEntry | None:
    """The registry entry of ``unet_{encoder}`` for any classification name ``{encoder}`` (``None`` otherwise)."""
    if not name.startswith(PREFIX):
        return None
    encoder = get_entry(name[len(PREFIX) :])
    if encoder.family == "unet":
        raise ValueError(f"{name}: the encoder of a U-Net must be a classification model, not {encoder.name}")
    return ModelEntry(name, encoder.arch, "unet", UNet, {"encoder": encoder.name}, encoder.filter_size)


register_resolver(unet_entry)
