"""A one-tower text export that also loads as a sentence-transformers model.

    OUT/modules.json                   Transformer (OUT/<tower>/encoder) -> Pooling -> FuseHead -> Normalize
    OUT/config_sentence_transformers.json
    OUT/<tower>/encoder/sentence_bert_config.json   the tokenizer's max length, as fuse truncates
    OUT/<tower>/pooling/config.json    mean or CLS pooling, as the fuse encoder pools
    OUT/<tower>/fuse_head.json         the head's registered name, options and sizes (FuseHead's config)
    OUT/<tower>/normalize/config.json

The head is no sentence-transformers module, so ``FuseHead`` (this file, in the installed fuse
package) rebuilds it through fuse's head registry and reads ``head.safetensors``: the export holds
no code. sentence-transformers 6 imports any module class outside its own namespace only with
``trust_remote_code=True``, even one from an installed package, so load with
``SentenceTransformer(OUT, trust_remote_code=True)``; nothing in OUT is executed, the flag only lets it
import ``fuse.model.sentence_transformers.FuseHead``. This module imports nothing from sentence-transformers:
fuse writes the files without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fuse.base.atomic import write_text
from fuse.base.errors import ModelFileError

HEAD_CONFIG = "fuse_head.json"
TOP_FILES = ("modules.json", "config_sentence_transformers.json")


def write_sentence_transformers(out: Path, tower: str, st_config: dict, head: dict, in_dim: int,
                                out_dim: int) -> None:
    """The sentence-transformers files of a one-tower export in ``out`` (its encoder and head.safetensors
    are written already). ``st_config``: the encoder's ``sentence_transformers_config()``."""
    from fuse.base.plugin_manager import installed_version

    base = out / tower
    modules = [("encoder", "sentence_transformers.base.modules.transformer.Transformer"),
               ("pooling", "sentence_transformers.sentence_transformer.modules.pooling.Pooling"),
               ("", "fuse.model.sentence_transformers.FuseHead"),
               ("normalize", "sentence_transformers.base.modules.normalize.Normalize")]
    listing = [{"idx": i, "name": str(i), "path": f"{tower}/{sub}".rstrip("/"), "type": cls}
               for i, (sub, cls) in enumerate(modules)]
    write_text(out / "modules.json", json.dumps(listing, indent=2))
    write_text(out / "config_sentence_transformers.json", json.dumps(
        {"model_type": "SentenceTransformer", "similarity_fn_name": "cosine", "prompts": {"query": "", "document": ""},
         "default_prompt_name": None, "__version__": {"fuse-align": installed_version()}}, indent=2))
    write_text(base / "encoder" / "sentence_bert_config.json", json.dumps(
        {"transformer_task": "feature-extraction",
         "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
         "module_output_name": "token_embeddings",
         "processor_kwargs": {"model_max_length": st_config["max_length"]}}, indent=2))
    (base / "pooling").mkdir(parents=True, exist_ok=True)
    write_text(base / "pooling" / "config.json", json.dumps(
        {"embedding_dimension": in_dim, "pooling_mode": st_config["pooling"], "include_prompt": True}, indent=2))
    write_text(base / HEAD_CONFIG, json.dumps({"name": head["name"], "options": head.get("options", {}),
                                               "in_dim": in_dim, "out_dim": out_dim}, indent=2))
    (base / "normalize").mkdir(parents=True, exist_ok=True)
    write_text(base / "normalize" / "config.json", "{}")


class FuseHead(nn.Module):
    """A fuse head as a sentence-transformers module: sentence_embedding -> head(sentence_embedding)."""

    def __init__(self, head: nn.Module, config: dict[str, Any]):
        super().__init__()
        self.head, self.config = head, config

    def forward(self, features: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        x = features["sentence_embedding"]
        features["sentence_embedding"] = self.head(x.to(next(self.head.parameters()).dtype))
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.config["out_dim"]

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs) -> "FuseHead":
        """Rebuild the head by its registered name (fuse's registry, so its plugin must be installed) and
        read its weights from ``head.safetensors`` beside ``fuse_head.json``; local directories only."""
        from safetensors.torch import load_file

        from fuse.recipes.spec import resolve_spec

        folder = Path(model_name_or_path) / subfolder
        cfg_file = folder / HEAD_CONFIG
        if not cfg_file.is_file():
            raise ModelFileError(f"{cfg_file} not found: FuseHead loads a fuse one-tower export from a local folder "
                                 "(fuse export RUN OUT --tower text).")
        try:
            config = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"{cfg_file} is corrupt: {exc}") from None
        head = resolve_spec("head", config["name"], config.get("options"), f"{cfg_file}:name").build(
            in_dim=config["in_dim"], out_dim=config["out_dim"])
        try:
            head.load_state_dict(load_file(str(folder / "head.safetensors")))
        except Exception as exc:
            raise ModelFileError(f"Could not load {folder / 'head.safetensors'}: {exc}") from None
        return cls(head.eval(), config)

    def save(self, output_path: str, *args, **kwargs) -> None:
        """Written the way fuse exports it (so a re-saved model still loads in fuse and here)."""
        from safetensors.torch import save_file

        out = Path(output_path)
        out.mkdir(parents=True, exist_ok=True)
        (out / HEAD_CONFIG).write_text(json.dumps(self.config, indent=2))
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(out / "head.safetensors"))
