"""`open_clip`: one tower (image or text) of an open_clip model, with its projection, in open_clip's joint space.

Any architecture open_clip knows (``open_clip.list_models()``) with any of its pretrained tags
(``open_clip.list_pretrained()``) or a weights file, as clip_benchmark names them (``--model ViT-B-32
--pretrained laion2b_s34b_b79k``). Each tower preprocesses as open_clip does: the image tower with the
transform open_clip builds for those weights (size, resize mode, mean/std of the tag), the text tower
with the model's tokenizer and context length. The latent is ``encode_image``/``encode_text`` before
normalising, so with an ``identity`` head the embeddings are open_clip's own.

A saved tower is open_clip's own ``local-dir`` layout (``open_clip_config.json``: the model and
preprocessing config; the tokenizer files when it is a Hugging Face one) plus ``tower.safetensors``,
this tower's weights only, so it rebuilds with no cache and no network. Needs the `openclip` extra.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
from pathlib import Path
from typing import Any, Literal

import torch

import fuse

CONFIG, WEIGHTS = "open_clip_config.json", "tower.safetensors"


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise fuse.PluginError("encoder 'open_clip' needs open_clip: pip install 'fuse-align[openclip]' "
                               "(open_clip_torch).") from None
    return open_clip


@contextlib.contextmanager
def quiet():
    """open_clip reports through the root logger (a download it could not make, a checkpoint it found): fuse says
    what matters in its own one-line errors."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


def check_name(model: str, pretrained: str | None) -> None:
    """An architecture and tag open_clip knows (or a weights file), else one line listing the close ones."""
    oc = _open_clip()
    archs = oc.list_models()
    if model not in archs:
        close = difflib.get_close_matches(model, archs, n=8, cutoff=0.5) or archs[:8]
        raise fuse.RecipeError(f"open_clip has no architecture '{model}'; close ones: {', '.join(close)} "
                               f"({len(archs)} in open_clip.list_models()).")
    if pretrained is None:
        raise fuse.RecipeError(f"open_clip {model}: give pretrained, a tag "
                               f"({', '.join(oc.list_pretrained_tags_by_model(model)) or 'none known'}) or a weights file.")
    tags = oc.list_pretrained_tags_by_model(model)
    if pretrained not in tags and not Path(pretrained).expanduser().is_file():
        raise fuse.RecipeError(f"open_clip {model} has no pretrained tag '{pretrained}' and no such file; its tags: "
                               f"{', '.join(tags) or 'none (give a weights file)'}.")


def fetch_hint(model: str, pretrained: str) -> str:
    """How to put a tag's weights into the cache open_clip reads offline."""
    cfg = _open_clip().get_pretrained_cfg(model, pretrained) or {}
    cache = "the Hugging Face cache, $HF_HOME/hub or ~/.cache/huggingface/hub" if cfg.get("hf_hub") else \
        "open_clip's cache, ~/.cache/clip"
    return (f"Fetch them once where there is network: python -c \"import open_clip; open_clip.create_model('{model}', "
            f"pretrained='{pretrained}')\" (into {cache}), or there run fuse export open_clip:{model}@{pretrained} DIR "
            "and copy DIR here.")


class OpenClipEncoder(fuse.Encoder):
    """One tower of an open_clip model: encode_image or encode_text, before normalising."""

    class Options(fuse.Options):
        model: str                          # an architecture (open_clip.list_models()) or a tower fuse saved ('./')
        pretrained: str | None = None       # a tag of it (open_clip.list_pretrained()) or a weights file
        tower: Literal["image", "text"]

    def __init__(self, options: Options):
        super().__init__()
        oc = _open_clip()
        self.options = options
        saved = Path(fuse.resolve_path(options.model)) if options.model.startswith(("./", "/", "~")) else None
        if saved is not None:
            model, self.name = self._load_saved(oc, saved), f"local-dir:{saved}"
        else:
            check_name(options.model, options.pretrained)
            model, self.name = self._load_named(oc, options), options.model
        self.preprocess_cfg = dict(model.visual.preprocess_cfg)
        self.model_cfg = json.loads(json.dumps(oc.get_model_config(options.model) if saved is None else
                                               json.loads((saved / CONFIG).read_text())["model_cfg"]))
        dim = self.model_cfg["embed_dim"]  # both towers embed into the model's joint space
        if options.tower == "image":
            from open_clip.transform import PreprocessCfg, image_transform_v2

            self.transform = image_transform_v2(PreprocessCfg(**self.preprocess_cfg), is_train=False)
            self.tower = model.visual
        else:
            self.tokenizer = oc.get_tokenizer(self.name)
            del model.visual  # the text tower only
            self.tower = model
        self.tower.eval()
        size = self.preprocess_cfg.get("size")
        self.info = fuse.EncoderInfo(modality=options.tower, input=options.tower, dim=int(dim),
                                     source=str(saved) if saved else f"open_clip:{options.model}@{options.pretrained}",
                                     image_size=size if isinstance(size, int) else None,
                                     mean=tuple(self.preprocess_cfg["mean"]) if options.tower == "image" else None,
                                     std=tuple(self.preprocess_cfg["std"]) if options.tower == "image" else None)

    @staticmethod
    def _load_named(oc, options: Options):
        try:
            with quiet():
                return oc.create_model(options.model, pretrained=str(Path(options.pretrained).expanduser())
                                       if Path(options.pretrained).expanduser().is_file() else options.pretrained)
        except RuntimeError as exc:
            if "download" in str(exc).lower():
                raise fuse.ModelFileError(f"open_clip:{options.model}@{options.pretrained}: the weights are not in the "
                                          f"local cache and cannot be downloaded (offline?). "
                                          f"{fetch_hint(options.model, options.pretrained)}") from None
            raise fuse.ModelFileError(f"open_clip:{options.model}@{options.pretrained}: "
                                      f"{str(exc).splitlines()[0]}") from None

    def _load_saved(self, oc, directory: Path):
        """A tower fuse saved: the architecture from its config, this tower's weights from tower.safetensors."""
        if not (directory / CONFIG).is_file():
            raise fuse.ModelFileError(f"{directory} holds no {CONFIG}: not an open_clip tower fuse saved.")
        with quiet():
            model = oc.create_model(f"local-dir:{directory}", load_weights=False)
        state = fuse.load_state_dict(directory / WEIGHTS)
        mine = {k for k in model.state_dict() if k.startswith("visual.") == (self.options.tower == "image")}
        missing = sorted(mine - set(state))
        if missing or set(state) - mine:
            raise fuse.ModelFileError(f"{directory / WEIGHTS} does not fit {directory / CONFIG}: missing "
                                      f"{missing[:3]}, unexpected {sorted(set(state) - mine)[:3]}.")
        model.load_state_dict(state, strict=False)
        return model

    def preprocess(self, raw: list) -> dict[str, torch.Tensor]:
        if self.options.tower == "image":
            return {"pixel_values": torch.stack([self.transform(im) for im in raw])}
        return {"input_ids": self.tokenizer(list(raw))}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.options.tower == "text":
            return self.tower.encode_text(batch["input_ids"], normalize=False)
        out = self.tower(batch["pixel_values"])
        return out[0] if isinstance(out, tuple) else out  # CoCa's visual also returns its tokens

    def preprocessing_signature(self) -> dict[str, Any]:
        if self.options.tower == "image":
            return {"tower": "image", "preprocess": self.preprocess_cfg}
        return {"tower": "text", "text_cfg": {k: v for k, v in self.model_cfg["text_cfg"].items()
                                              if k in ("context_length", "vocab_size", "tokenizer_kwargs")},
                "tokenizer": type(self.tokenizer).__name__}

    def save(self, directory: Path) -> dict[str, Any]:
        directory.mkdir(parents=True, exist_ok=True)
        model_cfg = json.loads(json.dumps(self.model_cfg))
        if self.options.tower == "text" and hasattr(getattr(self.tokenizer, "tokenizer", None), "save_pretrained"):
            self.tokenizer.tokenizer.save_pretrained(str(directory))  # a Hugging Face tokenizer: its files, here
            model_cfg["text_cfg"]["hf_tokenizer_name"] = "./"     # local-dir: open_clip reads them from the folder
        (directory / CONFIG).write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": self.preprocess_cfg},
                                                   indent=2))
        prefix = "visual." if self.options.tower == "image" else ""
        fuse.save_state_dict(_Prefixed(self.tower, prefix), directory / WEIGHTS)
        return {"model": "./", "pretrained": None, "tower": self.options.tower}


class _Prefixed(torch.nn.Module):
    """``module``'s state dict under the key prefix it has in the whole open_clip model."""

    def __init__(self, module: torch.nn.Module, prefix: str):
        super().__init__()
        self.module, self.prefix = module, prefix

    def state_dict(self, *args, **kwargs):
        return {self.prefix + k: v for k, v in self.module.state_dict().items()}


@fuse.hookimpl
def register_encoders(register):
    register("open_clip", OpenClipEncoder, modalities=("image", "text"))
