"""Export and load aligned models as plain directories of JSON + safetensors.

    OUT/fuse_model.json          what to rebuild: registered names + options per tower, trained pairs
    OUT/<modality>/encoder/...   the encoder's own files (weights as safetensors)
    OUT/<modality>/head.safetensors
    OUT/fusion.safetensors       the shared fusion module, when the model has one
    OUT/README.md                model card (and OUT/metrics.png, the run's training curves)
    OUT/modules.json ...         a one-tower text export also loads in sentence-transformers
                                 (fuse.model.sentence_transformers)

fuse_model.json records every file's size and sha256; loading checks them first.

Loading resolves names through the plugin registry (a missing plugin says which package to
install) and never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from fuse.base.atomic import atomic_dir, locked, sweep_stale, write_text
from fuse.base.errors import FuseError, ModelFileError, StorageError
from fuse.base.owned import exclusive
from fuse.base.plugin_manager import installed_version
from fuse.base.weights import read_checkpoint, save_state_dict
from fuse.model.aligned import AlignedModel
from fuse.model.export_files import record_files
from fuse.model.load import model_from_plan
from fuse.model.model_card import model_card
from fuse.recipes.export_format import CONFIG, FORMAT, FORMAT_VERSION, PLOTS, is_export
from fuse.recipes.plan import load_plan


def export_model(model: AlignedModel, out_dir: str | Path, card: dict | None = None,
                 pairs: list[tuple[str, str]] | None = None, force: bool = False, tower: str | None = None,
                 plots: list[str | Path] = ()) -> Path:
    """Write ``model`` (every tower, or only ``tower``) to ``out_dir``, atomically: built in a unique folder
    beside it, fsynced, then renamed. An existing non-empty ``out_dir`` must be a previous fuse export and
    ``force`` given; the old export is removed only once the new one is complete. ``plots`` (e.g. the
    run's metrics.png) are copied in when they exist."""
    out = Path(out_dir)
    check_tower(model, tower)
    check_export_target(out, force)
    with locked(out):  # one exporter at a time, so temp folders that a killed one left can go
        sweep_stale(out)
        check_export_target(out, force)  # again, now that no other exporter is busy
        with atomic_dir(out) as tmp:
            _write_export(model, tmp, card, pairs, tower, plots)
    return out


def check_tower(model: AlignedModel, tower: str | None) -> None:
    """A one-tower export needs a tower the model has, and towers that do not share a fusion block."""
    if tower is None:
        return
    if tower not in model.modalities:
        raise FuseError(f"--tower {tower}: this model has towers {', '.join(model.modalities)}.")
    if model.fusion is not None:
        raise FuseError(f"--tower {tower}: this model's towers share a '{model.fusion_spec.name}' fusion block, so "
                        f"the {tower} tower alone would not give the model's embeddings; export the whole model.")


def _write_export(model: AlignedModel, tmp: Path, card: dict | None, pairs, tower: str | None = None,
                  plots=()) -> None:
    """Every file of an export, into the (temporary) folder ``tmp``."""
    card = dict(card or {})
    recipe = Path(str(card.get("recipe", "")))
    if card.get("recipe") and recipe.is_file() and "recipe_text" not in card:
        card["recipe_text"] = recipe.read_text(encoding="utf-8", errors="replace")
    copied = []
    for plot in plots:
        if Path(plot).is_file() and Path(plot).name in PLOTS:
            shutil.copyfile(plot, tmp / Path(plot).name)
            copied.append(Path(plot).name)
    card["plots"] = copied
    towers, st = {}, False
    for m in (tower,) if tower else model.modalities:
        enc, head = model.encoders[m], model.heads[m]
        enc_options = enc.save(tmp / m / "encoder")
        save_state_dict(head, tmp / m / "head.safetensors")
        enc_spec = model.specs[m]["encoder"]
        towers[m] = {
            "encoder": {"name": enc_spec.name, "package": enc_spec.package, "options": enc_options,
                        "info": dataclasses.asdict(enc.info)},
            "head": {**model.specs[m]["head"].as_dict(), "in_dim": enc.info.dim},
        }
        st_config = enc.sentence_transformers_config() if tower else None
        if st_config is not None:
            from fuse.model.sentence_transformers import write_sentence_transformers

            write_sentence_transformers(tmp, m, st_config, towers[m]["head"], enc.info.dim, model.embed_dim)
            st = True
    if model.fusion is not None:
        save_state_dict(model.fusion, tmp / "fusion.safetensors")
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "fuse_version": installed_version(),
              "embed_dim": model.embed_dim, "modalities": towers,
              "fusion": model.fusion_spec.as_dict() if model.fusion_spec else None,
              "pairs": [list(p) for p in pairs or []] if not tower else [], "card": card,
              "tower": tower, "sentence_transformers": st}
    write_text(tmp / "README.md", model_card(config))
    # Every file loading reads; the model card and plots are for people and may be edited.
    config["files"] = record_files(tmp, skip=(CONFIG, "README.md", *PLOTS))
    write_text(tmp / CONFIG, json.dumps(config, indent=2, default=str))  # last: its presence marks a whole export


def check_export_target(out: Path, force: bool, run_dir: Path | None = None) -> None:
    """Refuse any OUT whose replacement could lose something: a file, a non-empty folder that is not
    a previous export (even with --force), an export without --force, the run dir or a folder in it."""
    if run_dir is not None:
        run, target = run_dir.resolve(), out.resolve()
        if target == run or run in target.parents:
            raise StorageError(f"Will not export into the run dir {run_dir}: it would overwrite its checkpoints. "
                               "Choose a folder outside it (the run already has its own export/).")
        if target in run.parents:
            raise StorageError(f"Will not export to {out}: it contains the run dir {run_dir}. Choose a new folder.")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise StorageError(f"{out} exists and is not a folder; choose a new folder for the export.")
    if not out.exists() or not any(out.iterdir()):
        return
    if not is_export(out):
        names = sorted(p.name for p in out.iterdir())
        raise StorageError(f"{out} is not empty ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}) and is "
                           "not a fuse export, so fuse will not replace it, even with --force. Choose a new or empty "
                           "folder.")
    if not force:
        raise StorageError(f"{out} already holds a fuse export; pass --force to replace it (the old one is removed "
                           "only once the new one is complete).")


def export_run(run_dir: str | Path, out_dir: str | Path, checkpoint: str = "best", force: bool = False,
               tower: str | None = None) -> Path:
    """Rebuild a run's model from its recipe.yaml, load a checkpoint's trainable weights (its content
    hash verified), export (every tower, or only ``tower``) with the run's eval.json metrics and plots
    in the model card. Nothing is written until every check has passed."""
    run_dir = Path(run_dir)
    check_export_target(Path(out_dir), force, run_dir)
    with exclusive(run_dir, "run"):  # not while a training run or another export holds it
        return _export_run(run_dir, out_dir, checkpoint, force, tower)


def _export_run(run_dir: Path, out_dir: str | Path, checkpoint: str, force: bool, tower: str | None) -> Path:
    recipe_file = run_dir / "recipe.yaml"
    if not recipe_file.exists():
        raise ModelFileError(f"{run_dir} is not a fuse run dir: no recipe.yaml.")
    ckpt = run_dir / "checkpoints" / f"{checkpoint.removesuffix('.safetensors')}.safetensors"
    if not ckpt.exists():
        found = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.safetensors"))
        raise ModelFileError(f"Checkpoint {ckpt} not found; available: {', '.join(found) or 'none'}.")
    plan = load_plan(recipe_file)
    model = model_from_plan(plan)
    state = read_checkpoint(ckpt)
    own = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(own, strict=False)
    missing_heads = [k for k in missing if k.startswith(("heads.", "fusion."))]
    if missing_heads or unexpected:
        raise ModelFileError(f"{ckpt} does not fit the run's recipe: missing {missing_heads[:5]}, "
                             f"unexpected {unexpected[:5]}.")
    check_tower(model, tower)
    card = {"recipe": str(recipe_file), "checkpoint": ckpt.name}
    eval_file = run_dir / "eval.json"
    if checkpoint.removesuffix(".safetensors") == "best" and eval_file.is_file():
        try:  # eval.json's "after" is the best checkpoint's validation
            card["metrics"] = json.loads(eval_file.read_text())
        except json.JSONDecodeError:
            pass  # a damaged eval.json only costs the card its table; the weights are verified
    return export_model(model, out_dir, card=card, pairs=[p.modalities for p in plan.pairs], force=force,
                        tower=tower, plots=[run_dir / p for p in PLOTS])
