"""The training loop: align two encoders with trainable heads, in one readable file.

    fuse train recipes/quickstart.yaml                        # one process, device auto
    fuse train recipes/vision_text.yaml train.epochs=3 output_dir=runs/x
    torchrun --nproc_per_node 8 -m fuse train recipes/fusemix_vision_text.yaml

Shape: setup (data, model, cached latents, objectives, optimiser) -> eval before ->
train (epochs of steps; log, evaluate, checkpoint) -> save (best weights, export, plot) ->
cleanup. Precision, distribution and the schedule are small helpers called from here.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from . import distributed
from .batches import PairBatches
from .cache import cached_latents, encode_values
from .datasets import build_dataset, default_cache_root
from .devices import resolve_device
from .errors import DataError, ModelFileError, RecipeError
from .eval.report import format_table
from .eval.retrieval import evaluate_retrieval
from .export import export_model
from .freezing import set_trainable
from .inputs import input_kind
from .interfaces import Step
from .manifest import PairedData, load_pairs
from .metrics import MetricsLog, plot_metrics
from .model import AlignedModel, build_encoder, build_model
from .optim import make_optimizer, param_groups, warmup_cosine
from .plugin_manager import registry
from .precision import Precision
from .recipe import Recipe
from .resume import load_state, restore, save_state
from .screening import drop_bad_media


class TrainStep(nn.Module):
    """Everything trainable; forward = one step's weighted loss, so DDP can wrap it whole."""

    def __init__(self, model: AlignedModel, objectives: nn.ModuleDict, weights: dict[str, float],
                 frozen: set[str], teacher_modality: str | None):
        super().__init__()
        self.model, self.objectives, self.weights = model, objectives, weights
        self.frozen, self.teacher_modality = frozen, teacher_modality
        self.latents: dict[str, torch.Tensor] = {}   # frozen modalities' latents for the current split
        self.teacher: torch.Tensor | None = None

    def forward(self, pairs: torch.Tensor, online: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        names = self.model.modalities
        latents = {}
        for col, m in enumerate(names):
            if m in self.frozen:
                latents[m] = self.latents[m][pairs[:, col]]
            else:
                batch = {k: v.to(pairs.device, non_blocking=True) for k, v in online[m].items()}
                latents[m] = self.model.encode_batch(m, batch)
        extras = {}
        if self.teacher is not None:
            extras["teacher"] = self.teacher[pairs[:, names.index(self.teacher_modality)]]
        step = Step(modalities=names, latents=latents, extras=extras,
                    embed=lambda lat: {m: self.model.forward_head(m, x) for m, x in lat.items()})
        terms = {name: obj(step) for name, obj in self.objectives.items()}
        loss = sum(self.weights[name] * value for name, value in terms.items())
        return loss, terms


def resolve_manifests(recipe: Recipe, cache_dir: Path) -> dict[str, Path]:
    """Manifests from data.train/data.val, or built by the registered dataset."""
    if recipe.data.train is not None:
        splits = {"train": Path(recipe.data.train)}
        if recipe.data.val:
            splits["val"] = Path(recipe.data.val)
        for split, path in splits.items():
            if not path.exists():
                raise DataError(f"data.{split}: manifest {path} not found. Fix the path, or build one "
                                "(docs/getting-started.md, 'Your own data').")
        return splits
    ds = recipe.data.dataset
    return build_dataset(ds.name, ds.options, cache_dir, where="data.dataset")


def build_objectives(recipe: Recipe, extra_dims: dict[str, int]) -> tuple[nn.ModuleDict, dict[str, float]]:
    objectives, weights = nn.ModuleDict(), {}
    for i, spec in enumerate(recipe.objectives):
        key = spec.name if spec.name not in objectives else f"{spec.name}_{i}"
        objectives[key] = registry("objective").create(spec.name, spec.options, f"objectives.{i}",
                                                       modalities=recipe.modality_names,
                                                       embed_dim=recipe.embed_dim, extra_dims=extra_dims)
        weights[key] = spec.weight
    return objectives, weights


@torch.no_grad()
def evaluate(model: AlignedModel, data: PairedData, latents: dict[str, torch.Tensor], recipe: Recipe) -> dict:
    """Retrieval recall on a split: frozen towers use their cached latents, others run online."""
    emb = {}
    for m in data.modalities:
        lat = latents[m] if m in latents else model.encode(m, data.values[m], recipe.data.encode_batch_size)
        emb[m] = model.project(m, lat)
    a, b = data.modalities
    return evaluate_retrieval(emb[a], emb[b], data.pairs, names=(a, b), ks=recipe.eval.ks,
                              chunk_size=recipe.eval.chunk_size)


def save_weights(step_module: TrainStep, path: Path) -> None:
    """Trainable weights only (heads, objectives, unfrozen encoders), as safetensors."""
    frozen = tuple(f"model.encoders.{m}." for m in step_module.frozen)
    state = {k: v.detach().cpu().contiguous() for k, v in step_module.state_dict().items()
             if not k.startswith(frozen)}
    save_file(state, str(path))


def _load_trainable(step_module: TrainStep, path: Path) -> None:
    """Trainable weights saved by ``save_weights``; a file from another recipe is an error."""
    result = step_module.load_state_dict(load_file(str(path)), strict=False)
    frozen = tuple(f"model.encoders.{m}." for m in step_module.frozen)
    missing = [k for k in result.missing_keys if not k.startswith(frozen)]
    if result.unexpected_keys or missing:
        raise ModelFileError(f"{path} does not fit this recipe's model (unexpected: {result.unexpected_keys[:3]}, "
                             f"missing: {missing[:3]}). Resume with the recipe the run was started with.")


def prune_checkpoints(ckpt_dir: Path, keep: int | None) -> None:
    """Delete all but the ``keep`` newest epoch files; best.safetensors and state.pt stay, so
    resume and export still work. ``None`` keeps every epoch."""
    if keep is None:
        return
    by_epoch = sorted(ckpt_dir.glob("epoch-*.safetensors"), key=lambda p: int(p.stem.split("-")[1]))
    for old in by_epoch[:-keep]:  # by number: epoch-1000 is newer than epoch-999
        old.unlink()


def train(recipe: Recipe, recipe_path: str | None = None, resume: bool = False) -> Path:
    """Run a recipe end to end; returns the run directory. ``resume`` continues the run in
    ``output_dir`` after its last completed epoch (see ``fuse.resume``)."""
    # ------------------------------------------------------------------ setup
    device = distributed.setup(resolve_device(recipe.device))
    main = distributed.is_main()
    torch.manual_seed(recipe.seed)  # identical head init on every rank
    run_dir = Path(recipe.output_dir)
    ckpt_dir = run_dir / "checkpoints"
    if main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    cache_dir = Path(recipe.data.cache_dir or default_cache_root()).expanduser()
    with distributed.main_first():
        manifests = resolve_manifests(recipe, cache_dir)
    names = recipe.modality_names
    specs = {m: s.model_dump() for m, s in recipe.modalities.items()}
    model = build_model(specs, recipe.embed_dim, fusion=recipe.fusion.model_dump() if recipe.fusion else None).to(device)
    kinds = {m: model.input_kind(m) for m in names}
    file_modalities = tuple(m for m in names if input_kind(kinds[m]).files)
    data = {split: load_pairs(path, names, file_modalities) for split, path in manifests.items()}
    if recipe.data.bad_media == "skip":
        if main:
            (run_dir / "skipped_media.txt").unlink(missing_ok=True)
        with distributed.main_first():
            data = {split: drop_bad_media(d, kinds, cache_dir, run_dir / "skipped_media.txt" if main else None, split)
                    for split, d in data.items()}
    if len(data["train"]) < 2:
        raise DataError(f"{manifests['train']}: {len(data['train'])} pair(s); contrastive training needs at least 2.")
    print(f"data: {len(data['train'])} train pairs" + (f", {len(data['val'])} val pairs" if "val" in data else ", no val split"))

    # Frozen towers are encoded once (cached on disk unless data.cache_latents is false).
    frozen = {m for m in names if recipe.modalities[m].encoder.frozen}
    for m in names:
        patterns = recipe.modalities[m].encoder.trainable
        if patterns is not None:
            n = set_trainable(model.encoders[m], patterns, f"modalities.{m}.encoder.trainable")
            print(f"{m} encoder: {n / 1e6:.2f}M of its parameters are trained ({', '.join(patterns)})")
    latents: dict[str, dict[str, torch.Tensor]] = {split: {} for split in data}
    for m in names:
        enc = model.encoders[m]
        if m in frozen:
            enc.requires_grad_(False).eval()
        for split, d in data.items():
            if m in frozen:
                latents[split][m] = _frozen_latents(enc, specs[m]["encoder"], d.values[m], recipe, cache_dir,
                                                    device, f"{m}/{split}", tokens=model.uses_tokens).to(device)
    teacher = {}
    extra_dims = {}
    if recipe.teacher is not None:
        t_enc = build_encoder(recipe.teacher.encoder.model_dump(), "teacher.encoder").to(device).eval()
        t_enc.requires_grad_(False)
        extra_dims["teacher"] = t_enc.info.dim
        for split, d in data.items():
            teacher[split] = _frozen_latents(t_enc, recipe.teacher.encoder.model_dump(),
                                             d.values[recipe.teacher.modality], recipe, cache_dir, device,
                                             f"teacher/{split}").to(device)
        del t_enc

    objectives, weights = build_objectives(recipe, extra_dims)
    step_module = TrainStep(model, objectives.to(device), weights, frozen,
                            recipe.teacher.modality if recipe.teacher else None)
    step_module.latents, step_module.teacher = latents["train"], teacher.get("train")
    trainer = distributed.wrap(step_module, device)

    online = {m: model.encoders[m] for m in names if m not in frozen}
    batches = PairBatches(data["train"], recipe.train.batch_size // distributed.world_size(), online, device,
                          recipe.seed, recipe.train.drop_last, recipe.data.num_workers)
    steps_per_epoch = max(1, len(batches) // recipe.train.grad_accum)
    total_steps = recipe.train.max_steps or steps_per_epoch * recipe.train.epochs
    epochs = math.ceil(total_steps / steps_per_epoch)
    trainable = [model.heads, objectives] + ([model.fusion] if model.fusion is not None else [])
    groups = param_groups({"heads": trainable, "encoders": list(online.values())},
                          recipe.optim.lr, recipe.optim.encoder_lr or recipe.optim.lr / 10,
                          recipe.optim.weight_decay)
    optimizer = make_optimizer(groups, recipe.optim.betas, recipe.optim.eps)
    scheduler = warmup_cosine(optimizer, recipe.schedule.warmup_steps, total_steps, recipe.schedule.min_lr_ratio)
    precision = Precision(recipe.train.precision, device)
    params = [p for g in groups for p in g["params"]]
    state = load_state(ckpt_dir) if resume else None
    log = MetricsLog(run_dir / "metrics.jsonl", state["step"] if state else None) if main else None
    n_params = sum(p.numel() for p in params)
    print(f"training {n_params / 1e6:.2f}M parameters for {total_steps} steps ({epochs} epochs of "
          f"{steps_per_epoch}) on {device}, precision {precision.mode}, batch {batches.batch_size}"
          f"x{distributed.world_size()}x{recipe.train.grad_accum}")

    # ------------------------------------------------------------------ eval before
    results: dict[str, dict] = {}
    if "val" in data and main:
        results["before"] = evaluate(model, data["val"], latents["val"], recipe)
        if state is None:
            log.write({"kind": "val", "step": 0, "epoch": 0, **results["before"]})

    step, best, best_epoch, start_epoch = 0, -math.inf, None, 1
    if state is not None:
        _load_trainable(step_module, state["weights"])
        restore(state, optimizer, scheduler, precision, step_module)
        step, best, best_epoch, start_epoch = state["step"], state["best"], state["best_epoch"], state["epoch"] + 1
        print(f"resuming after epoch {state['epoch']} (step {step}) from {state['weights']}")

    # ------------------------------------------------------------------ train
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=step, desc="train", disable=not main, unit="step")
    t0, seen = time.perf_counter(), 0
    epoch = start_epoch - 1
    for epoch in range(start_epoch, epochs + 1):
        trainer.train()
        for m in frozen:
            model.encoders[m].eval()  # frozen towers keep eval-mode BatchNorm/dropout
        batches.set_epoch(epoch)
        for i, (pairs, inputs) in enumerate(batches):
            with precision.autocast():
                loss, terms = trainer(pairs, inputs)
            # Accumulate gradients over grad_accum micro-batches, then take one optimiser step.
            precision.backward(loss / recipe.train.grad_accum)
            seen += pairs.shape[0]
            if (i + 1) % recipe.train.grad_accum:
                continue
            lr = optimizer.param_groups[0]["lr"]  # the rate this step used
            grad_norm = precision.step(optimizer, params, recipe.optim.grad_clip)
            scheduler.step()
            step += 1
            bar.update(1)
            if main and (step % recipe.train.log_every == 0 or step == 1 or step == total_steps):
                row = {"kind": "train", "step": step, "epoch": epoch, "loss": loss.item(), "lr": lr, "grad_norm": grad_norm,
                       "samples_per_s": seen * distributed.world_size() / (time.perf_counter() - t0)}
                row.update({f"loss/{k}": v.item() for k, v in terms.items()} if len(terms) > 1 else {})
                for obj in objectives.values():
                    row.update(obj.metrics())
                log.write(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}")
            if step >= total_steps:
                break
        # Evaluate, checkpoint, keep the best by the recipe's metric.
        if main:
            save_weights(step_module, ckpt_dir / f"epoch-{epoch:03d}.safetensors")
            if "val" in data and (epoch % recipe.train.eval_every == 0 or step >= total_steps):
                metrics = evaluate(model, data["val"], latents["val"], recipe)
                log.write({"kind": "val", "step": step, "epoch": epoch, **metrics})
                if recipe.train.best_metric not in metrics:
                    raise RecipeError(f"train.best_metric: '{recipe.train.best_metric}' is not a val metric; "
                                      f"available: {', '.join(metrics)}")
                if metrics[recipe.train.best_metric] > best:
                    best, best_epoch = metrics[recipe.train.best_metric], epoch
                    shutil.copyfile(ckpt_dir / f"epoch-{epoch:03d}.safetensors", ckpt_dir / "best.safetensors")
            save_state(ckpt_dir, epoch=epoch, step=step, best=best, best_epoch=best_epoch,
                       optimizer=optimizer, scheduler=scheduler, precision=precision, modules=step_module)
            prune_checkpoints(ckpt_dir, recipe.train.keep_checkpoints)
        if step >= total_steps:
            break
    bar.close()

    # ------------------------------------------------------------------ save
    if main:
        if best_epoch is not None:
            _load_trainable(step_module, ckpt_dir / "best.safetensors")
            results["after"] = evaluate(model, data["val"], latents["val"], recipe)
            results["best_epoch"] = best_epoch
        else:
            shutil.copyfile(ckpt_dir / f"epoch-{epoch:03d}.safetensors", ckpt_dir / "best.safetensors")
        (run_dir / "eval.json").write_text(json.dumps(results, indent=2))
        if "before" in results:
            print(format_table({"before (untrained heads)": results["before"],
                                f"after (best epoch {best_epoch})": results["after"]}))
        plot_metrics(run_dir / "metrics.jsonl", run_dir / "metrics.png")
        export_model(model, run_dir / "export",
                     card={"recipe": recipe_path or recipe.name, "metrics": results})
        print(f"run dir: {run_dir}  (metrics.jsonl, metrics.png, eval.json, checkpoints/, export/)")

    # ------------------------------------------------------------------ cleanup
    distributed.cleanup()
    return run_dir


def _frozen_latents(encoder, spec: dict, values: list[str], recipe: Recipe, cache_dir: Path,
                    device: torch.device, label: str, tokens: bool = False):
    if recipe.data.cache_latents:
        with distributed.main_first():  # rank 0 encodes and writes; the others then read
            return cached_latents(encoder, spec, values, cache_dir, device, recipe.data.encode_batch_size,
                                  recipe.data.num_workers, label, tokens=tokens)
    return encode_values(encoder, values, device, recipe.data.encode_batch_size, recipe.data.num_workers,
                         desc=f"encoding {label}", tokens=tokens)
