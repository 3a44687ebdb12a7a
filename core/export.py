"""Export and load aligned models as plain directories of JSON + safetensors.

    OUT/fuse_model.json          what to rebuild: registered names + options per tower
    OUT/<modality>/encoder/...   the encoder's own files (weights as safetensors)
    OUT/<modality>/head.safetensors
    OUT/fusion.safetensors       the shared fusion module, when the model has one
    OUT/README.md                model card

Loading resolves names through the plugin registry (a missing plugin says which package to
install) and never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from .errors import ModelFileError, PluginError, RecipeError
from .model import AlignedModel, build_trainable
from .plugin_manager import installed_version, registry
from .weights import save_state_dict

FORMAT = "fuse-aligned-model"
CONFIG = "fuse_model.json"


def export_model(model: AlignedModel, out_dir: str | Path, card: dict | None = None) -> Path:
    """Write ``model`` to ``out_dir`` (replacing it)."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    towers = {}
    for m in model.modalities:
        enc, head = model.encoders[m], model.heads[m]
        enc_options = enc.save(tmp / m / "encoder")
        save_state_dict(head, tmp / m / "head.safetensors")
        enc_entry = registry("encoder").get(model.specs[m]["encoder"]["name"])
        towers[m] = {
            "encoder": {"name": enc_entry.name, "package": enc_entry.package, "options": enc_options,
                        "info": dataclasses.asdict(enc.info)},
            "head": {**model.specs[m]["head"], "in_dim": enc.info.dim},
        }
    if model.fusion is not None:
        save_state_dict(model.fusion, tmp / "fusion.safetensors")
    config = {"format": FORMAT, "format_version": 1, "fuse_version": installed_version(),
              "embed_dim": model.embed_dim, "modalities": towers, "fusion": model.fusion_spec, "card": card or {}}
    (tmp / CONFIG).write_text(json.dumps(config, indent=2, default=str))
    (tmp / "README.md").write_text(model_card(config))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _resolve_relative(options: dict, base: Path) -> dict:
    """Options saved as './x' are relative to the tower's folder."""
    return {k: str(base / v[2:]) if isinstance(v, str) and v.startswith("./") else v for k, v in options.items()}


def load_aligned(path: str | Path, device: str = "cpu") -> AlignedModel:
    """Rebuild an exported model (or the export inside a run dir) with no network access."""
    path = Path(path)
    if (path / "export" / CONFIG).exists() and not (path / CONFIG).exists():
        path = path / "export"
    cfg_file = path / CONFIG
    if not cfg_file.exists():
        raise ModelFileError(f"{path} is not a fuse model: no {CONFIG}. Give an export dir (fuse export RUN OUT) "
                             f"or a run dir that has one.")
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{cfg_file} is corrupt: {exc}") from None
    if config.get("format") != FORMAT:
        raise ModelFileError(f"{cfg_file} is not a {FORMAT} config.")
    encoders, specs = {}, {}
    for m, tower in config["modalities"].items():
        enc_cfg = tower["encoder"]
        try:
            registry("encoder").get(enc_cfg["name"])
        except RecipeError:
            raise PluginError(f"{cfg_file}: the {m} encoder needs plugin '{enc_cfg['name']}' from "
                              f"{enc_cfg.get('package', 'an uninstalled package')}; install it.") from None
        options = _resolve_relative(enc_cfg["options"], path / m / "encoder")
        enc = registry("encoder").create(enc_cfg["name"], options, f"{cfg_file}:{m}.encoder")
        enc.info = dataclasses.replace(enc.info, modality=m)
        encoders[m] = enc
        specs[m] = {"encoder": {"name": enc_cfg["name"], "options": enc_cfg["options"]},
                    "head": {"name": tower["head"]["name"], "options": tower["head"].get("options", {})}}
    fusion_spec = config.get("fusion")
    heads, fusion = build_trainable(specs, {m: t["head"]["in_dim"] for m, t in config["modalities"].items()},
                                    config["embed_dim"], fusion_spec)
    weights = [(heads[m], path / m / "head.safetensors") for m in heads]
    if fusion is not None:
        weights.append((fusion, path / "fusion.safetensors"))
    for module, file in weights:
        try:
            module.load_state_dict(load_file(str(file)))
        except Exception as exc:
            raise ModelFileError(f"Could not load {file}: {exc}") from None
    model = AlignedModel(encoders, heads, config["embed_dim"], specs, fusion, fusion_spec)
    return model.to(torch.device(device)).eval()


def model_card(config: dict) -> str:
    lines = ["# fuse aligned model", "",
             f"Aligned with fuse {config['fuse_version']}; shared embedding size {config['embed_dim']}.", "",
             "```python", "import fuse", "model = fuse.load('PATH')",
             f"z = model.embed('{next(iter(config['modalities']))}', [...])  # L2-normalised", "```", "",
             "| modality | encoder plugin | source | licence | latent dim | head |", "|---|---|---|---|---|---|"]
    for m, t in config["modalities"].items():
        info = t["encoder"]["info"]
        lines.append(f"| {m} | {t['encoder']['name']} ({t['encoder']['package']}) | {info.get('source', '')} | "
                     f"{info.get('license', '') or 'see source'} | {info['dim']} | {t['head']['name']} |")
    card = config.get("card") or {}
    if card.get("metrics"):
        lines += ["", "## Validation retrieval", "", "| metric | before | after |", "|---|---|---|"]
        before, after = card["metrics"].get("before", {}), card["metrics"].get("after", {})
        for k in after:
            if "R@" in k:
                lines.append(f"| {k} | {before.get(k, float('nan')):.2f} | {after[k]:.2f} |")
    if card.get("recipe"):
        lines += ["", f"Trained with recipe `{card['recipe']}`."]
    return "\n".join(lines) + "\n"


def export_run(run_dir: str | Path, out_dir: str | Path, checkpoint: str = "best") -> Path:
    """Rebuild a run's model from its recipe.yaml, load a checkpoint's trainable weights, export."""
    from .recipe import load_recipe

    run_dir = Path(run_dir)
    recipe_file = run_dir / "recipe.yaml"
    if not recipe_file.exists():
        raise ModelFileError(f"{run_dir} is not a fuse run dir: no recipe.yaml.")
    ckpt = run_dir / "checkpoints" / f"{checkpoint.removesuffix('.safetensors')}.safetensors"
    if not ckpt.exists():
        found = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.safetensors"))
        raise ModelFileError(f"Checkpoint {ckpt} not found; available: {', '.join(found) or 'none'}.")
    recipe = load_recipe(recipe_file)
    specs = {m: s.model_dump() for m, s in recipe.modalities.items()}
    from .model import build_model

    model = build_model(specs, recipe.embed_dim, fusion=recipe.fusion.model_dump() if recipe.fusion else None)
    try:
        state = load_file(str(ckpt))
    except Exception as exc:
        raise ModelFileError(f"Could not read checkpoint {ckpt}: {exc}") from None
    own = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(own, strict=False)
    missing_heads = [k for k in missing if k.startswith(("heads.", "fusion."))]
    if missing_heads or unexpected:
        raise ModelFileError(f"{ckpt} does not fit the run's recipe: missing {missing_heads[:5]}, "
                             f"unexpected {unexpected[:5]}.")
    return export_model(model, out_dir, card={"recipe": str(recipe_file), "checkpoint": ckpt.name})
