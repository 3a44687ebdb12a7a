"""A training run's setup, once before the first step: who does what (``Distribution``), the data,
the model, frozen towers' latents, the batch streams, the optimiser and the step, gathered in one
``Run`` that the loop (``fuse.training.loop``) reads.

The order is part of the behaviour: heads are initialised right after the seed on every rank,
and every rank fills the latent store in the recipe's order of towers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fuse.base.devices import free_memory, resolve_device
from fuse.data.datasets import default_cache_root
from fuse.data.load import describe, load_data
from fuse.model.aligned import AlignedModel
from fuse.model.load import model_from_plan
from fuse.recipes.plan import Plan
from fuse.recipes.recipe import Recipe
from fuse.training import distributed
from fuse.training.batches import PairStream, StreamOptions
from fuse.training.distributed import Distribution
from fuse.training.finite import NonFiniteGuard
from fuse.training.freezing import set_trainable
from fuse.training.fsdp import shard_encoders
from fuse.training.gradcache import Backward
from fuse.training.latent_tables import frozen_latents, mapped_tables
from fuse.training.lora import apply_loras
from fuse.training.optim import make_optimizer, param_groups, warmup_cosine
from fuse.training.precision import Precision
from fuse.training.rundir import open_run_dir
from fuse.training.step import StepModule
from fuse.training.trackers import Trackers, open_trackers


@dataclass
class Run:
    """Everything a run's steps, checkpoints and export read; built once by ``setup``."""

    plan: Plan
    dist: Distribution
    device: torch.device
    state: dict | None          # the checkpoint a resumed run continues from (None: a fresh run)
    splits: dict                # split -> PairedData
    model: AlignedModel
    frozen: set[str]            # towers whose latents come from tables, not an encoder run per step
    latents: dict               # split -> tower -> frozen latents (tensor or memory-mapped LatentTable)
    objectives: nn.ModuleDict
    step_module: StepModule
    online: dict[str, nn.Module]  # towers that run (and may train) inside the step
    streams: dict[tuple[str, str], PairStream]
    per_epoch: int
    total_steps: int
    epochs: int
    optimizer: torch.optim.Optimizer
    scheduler: object
    precision: Precision
    trainer: nn.Module          # the step module, DDP-wrapped unless steps sync by hand
    backward: Backward
    params: list[torch.Tensor]
    guard: NonFiniteGuard
    log: Trackers | None        # rank 0 only: metrics.jsonl and the recipe's trackers

    @property
    def recipe(self) -> Recipe:
        """The validated recipe the plan was resolved from."""
        return self.plan.recipe

    @property
    def run_dir(self) -> Path:
        """The recipe's output_dir: metrics, checkpoints, eval.json and the export."""
        return Path(self.recipe.output_dir)

    @property
    def ckpt_dir(self) -> Path:
        """Where epoch and step checkpoints, best.safetensors and state.pt live."""
        return self.run_dir / "checkpoints"

    @property
    def trained(self) -> list[tuple[str, str]]:
        """The trained pairs, in the recipe's order."""
        return [p.modalities for p in self.plan.pairs]


def build_objectives(plan: Plan, extra_dims: dict[str, int]) -> nn.ModuleDict:
    """Every objective, built for its own pair of modalities."""
    return nn.ModuleDict({o.key: o.spec.build(modalities=o.pair, embed_dim=plan.recipe.embed_dim, extra_dims=extra_dims)
                          for o in plan.objectives})


def steps_per_epoch(plan: Plan, streams: dict[tuple[str, str], PairStream]) -> int:
    """Optimiser steps in one epoch: a pass over the recipe's reference pair (train.epoch)."""
    return max(1, pass_batches(plan, streams) // plan.recipe.train.grad_accum)


def pass_batches(plan: Plan, streams: dict[tuple[str, str], PairStream]) -> int:
    """Batches in one pass over the recipe's reference pair (train.epoch)."""
    sizes = {p: len(s) for p, s in streams.items()}
    epoch = plan.recipe.train.epoch
    if epoch == "largest":
        return max(sizes.values())
    if epoch == "smallest":
        return min(sizes.values())
    return next(v for p, v in sizes.items() if set(p) == set(epoch))


def batch_field(recipe: Recipe, pair: tuple[str, str]) -> str:
    """The recipe field that sets a pair's batch size (for error messages)."""
    for i, entry in enumerate(recipe.data.pairs):
        if set(entry.modalities) == set(pair) and entry.batch_size:
            return f"data.pairs.{i}.batch_size"
    return "train.batch_size"


def setup(plan: Plan, resume: bool) -> Run:
    """Everything before the first step; checks that can refuse the run come before any write."""
    recipe = plan.recipe
    device = distributed.setup(resolve_device(recipe.device))
    dist = Distribution.decide(recipe.train, online=any(not t.frozen for t in plan.towers.values()))
    # Each rank's share of every pair's batch: checked before any data is read or encoded.
    local = {p.modalities: distributed.local_batch_size(p.batch_size, batch_field(recipe, p.modalities))
             for p in plan.pairs}
    torch.manual_seed(recipe.seed)  # identical head init on every rank
    state = open_run_dir(Path(recipe.output_dir), recipe, resume, dist.main)  # a refused resume writes nothing
    cache_dir = Path(recipe.data.cache_dir or default_cache_root()).expanduser()
    # Every rank reads its data at once, none waiting in a collective (NCCL's timeout): a dataset build is
    # locked (one rank builds, the others wait on the lock), screening verdicts and shard indexes are atomic.
    splits = load_data(plan, {m: t.input_kinds[0] for m, t in plan.towers.items()}, cache_dir,
                       Path(recipe.output_dir) / "skipped_media.txt" if dist.main else None)
    print(describe(splits))
    model = model_from_plan(plan).to(device)
    frozen = {m for m, t in plan.towers.items() if t.frozen}
    for m, t in plan.towers.items():
        if t.trainable is not None:
            n = set_trainable(model.encoders[m], t.trainable, f"modalities.{m}.encoder.trainable")
            print(f"{m} encoder: {n / 1e6:.2f}M of its parameters are trained ({', '.join(t.trainable)})")
    lora_frozen = apply_loras(model, recipe)  # peft adapters (encoder.lora): only they train
    latents, extras, extra_dims = encode_frozen(plan, model, splits, frozen, cache_dir, device)
    objectives = build_objectives(plan, extra_dims).to(device)
    step_module = StepModule(model, objectives, plan.objectives, plan.pairs, frozen,
                             {n: e.modality for n, e in plan.extras.items()})
    step_module.latents, step_module.extras = latents["train"], extras["train"]
    step_module.lora_frozen = tuple(lora_frozen)  # checkpoints skip the LoRA'd encoders' base weights
    online = {m: model.encoders[m] for m in model.modalities if m not in frozen}
    streams = {p.modalities: PairStream(splits["train"].pairs[p.modalities], splits["train"].table_pairs(p.modalities),
                                        {m: online[m] for m in p.modalities if m in online}, device,
                                        StreamOptions(local[p.modalities], recipe.seed, i, recipe.train.drop_last,
                                                      recipe.data.num_workers),
                                        mapped=mapped_tables(step_module, p.modalities))
               for i, p in enumerate(plan.pairs)}
    per_epoch = steps_per_epoch(plan, streams)
    total_steps = recipe.train.max_steps or per_epoch * recipe.train.epochs
    shard(dist, recipe, step_module, online)
    parts = optimise(dist, recipe, model, objectives, step_module, online, device, total_steps)
    log = open_trackers(recipe, Path(recipe.output_dir), state["step"] if state else None) if dist.main else None
    run = Run(plan, dist, device, state, splits, model, frozen, latents, objectives, step_module, online, streams,
              per_epoch, total_steps, math.ceil(total_steps / per_epoch), *parts, log=log)
    describe_run(run)
    return run


def encode_frozen(plan: Plan, model: AlignedModel, splits: dict, frozen: set[str], cache_dir: Path,
                  device: torch.device) -> tuple[dict, dict, dict[str, int]]:
    """Frozen towers' and extras' latents per split, and the extras' widths. Frozen towers are
    encoded once (cached on disk unless data.cache_latents is false), each rank its own slice;
    tables that do not fit the device stay memory-mapped (data.latents_on_device)."""
    recipe = plan.recipe
    room = [free_memory(device) // 2]
    latents: dict[str, dict] = {split: {} for split in splits}
    # In the recipe's order, never a set's: every rank must fill the same store at the same time
    # (string hashes, hence set order, differ between processes).
    for m in [m for m in plan.towers if m in frozen]:
        model.encoders[m].requires_grad_(False).eval()
        for split, d in splits.items():
            if m in d.values:
                latents[split][m] = frozen_latents(model.encoders[m], plan.towers[m].encoder.as_dict(), d.values[m],
                                                   recipe, cache_dir, device, f"{m}/{split}", room, model.uses_tokens)
    extras: dict[str, dict] = {split: {} for split in splits}
    extra_dims = {}
    for name, ex in plan.extras.items():
        enc = ex.encoder.build().to(device).eval().requires_grad_(False)
        extra_dims[name] = enc.info.dim
        for split, d in splits.items():
            if ex.modality in d.values:
                extras[split][name] = frozen_latents(enc, ex.encoder.as_dict(), d.values[ex.modality], recipe,
                                                     cache_dir, device, f"{name}/{split}", room)
        del enc
    return latents, extras, extra_dims


def shard(dist: Distribution, recipe: Recipe, step_module: StepModule, online: dict[str, nn.Module]) -> None:
    """Steps that sync by hand start from rank 0's parameters; train.fsdp shards unfrozen encoders
    before the optimiser sees their parameters."""
    if dist.syncs_by_hand:
        distributed.broadcast_params(step_module)
    if dist.sharded:
        for m, units in shard_encoders(online).items():
            mine = sum(p.to_local().numel() for p in online[m].parameters())
            total = sum(p.numel() for p in online[m].parameters())
            print(f"{m} encoder: fully sharded (FSDP) over {dist.world} ranks, {units} blocks + the rest as units; "
                  f"this rank holds {mine / 1e6:.2f}M of its {total / 1e6:.2f}M parameters")
    elif recipe.train.fsdp:
        print("train.fsdp has no effect: " + ("every tower is frozen" if not online else
                                              "one process (launch with torchrun to shard encoders)"))


def optimise(dist: Distribution, recipe: Recipe, model: AlignedModel, objectives: nn.ModuleDict,
             step_module: StepModule, online: dict[str, nn.Module], device: torch.device, total_steps: int) -> tuple:
    """The optimiser, schedule, precision, the (DDP-wrapped or not) step, its backward, the
    trained parameters and the non-finite guard, in ``Run``'s field order."""
    trainable = [model.heads, objectives] + ([model.fusion] if model.fusion is not None else [])
    groups = param_groups({"heads": trainable, "encoders": list(online.values())},
                          recipe.optim.lr, recipe.optim.encoder_lr or recipe.optim.lr / 10,
                          recipe.optim.weight_decay)
    optimizer = make_optimizer(groups, recipe.optim.betas, recipe.optim.eps)
    scheduler = warmup_cosine(optimizer, recipe.schedule.warmup_steps, total_steps, recipe.schedule.min_lr_ratio)
    precision = Precision(recipe.train.precision, device)
    trainer = step_module if dist.syncs_by_hand else distributed.wrap(step_module, device, find_unused=bool(online))
    backward = Backward(step_module, trainer, precision, recipe.train.chunk_size,
                        list(online.values()) if dist.sharded else [])
    params = [p for g in groups for p in g["params"]]
    guard = NonFiniteGuard(recipe.train.on_nonfinite, device, check_grads=precision.scaler is None)
    return optimizer, scheduler, precision, trainer, backward, params, guard


def describe_run(run: Run) -> None:
    """One line: what is trained, for how long, where, and in what batches."""
    recipe, accum = run.recipe, run.recipe.train.grad_accum
    batch_desc = " + ".join(f"{s.batch_size}x{run.dist.world}x{accum} {'-'.join(p)}" for p, s in run.streams.items())
    print(f"training {sum(p.numel() for p in run.params) / 1e6:.2f}M parameters for {run.total_steps} steps "
          f"({run.epochs} epochs of {run.per_epoch}) on {run.device}, precision {run.precision.mode}, batch {batch_desc}"
          + (f", online towers in chunks of {recipe.train.chunk_size}" if run.dist.chunked else ""))
    if recipe.train.chunk_size is not None and not run.dist.chunked:
        print("train.chunk_size has no effect: every tower is frozen, so the batch is a lookup in the latent table")
