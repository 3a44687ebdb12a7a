"""Held-out retrieval and within-emoji motion accuracy of `fuse train recipes/video_motion.yaml` runs.

    fuse train recipes/video_motion.yaml modalities.video.head.options.pooling=mean seed=1 \
        output_dir=/tmp/vm/mean-1 data.cache_dir=/tmp/vm-cache
    python benchmarks/video_motion.py /tmp/vm/*-*          # one row per run, then mean ± std per pooling

For each run: the best checkpoint's heads and freshly initialised ("untrained") heads, on the
val split's cached latents. Metrics: text->video and video->text R@1/R@5 over all val clips,
and motion accuracy: for each val caption, is its clip ranked first among the six clips of the
same emoji (chance 1/6; a model blind to frame order can at best get the axis right, 1/2), overall
and per motion axis (scale: grows/shrinks, shift: right/left, turn: counter-/clockwise).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from fuse.data.cache import EncodeOptions, cached_latents
from fuse.data.datasets import build_dataset
from fuse.data.manifest import load_pairs
from fuse.model.load import model_from_plan
from fuse.recipes.plan import resolve
from fuse.recipes.recipe import load_recipe

MOTIONS = ("grows", "shrinks", "moves-right", "moves-left", "turns-counter-clockwise", "turns-clockwise")
AXES = {"scale": ("grows", "shrinks"), "shift": ("moves-right", "moves-left"),
        "turn": ("turns-counter-clockwise", "turns-clockwise")}
METRICS = ("t2v R@1", "t2v R@5", "v2t R@1", "v2t R@5", "motion acc", *(f"acc {a}" for a in AXES))


def scores(model, latents, pairs, emoji, motions) -> dict[str, float]:
    video, text = model.project("video", latents["video"]), model.project("text", latents["text"])
    sim = text @ video.T                                    # [texts, videos]
    v_of_t = torch.full((sim.shape[0],), -1, dtype=torch.long)
    v_of_t[pairs[:, 1]] = pairs[:, 0]
    t2v_rank = (sim > sim[torch.arange(len(sim)), v_of_t][:, None]).sum(1)
    v2t_rank = (sim.T[v_of_t] > sim[torch.arange(len(sim)), v_of_t][:, None]).sum(1)
    same = emoji[v_of_t][:, None] == emoji[None, :]        # clips of the caption's emoji
    hit = (sim.masked_fill(~same, -2).argmax(1) == v_of_t).float()
    axis = [next(a for a, ms in AXES.items() if motions[v] in ms) for v in v_of_t.tolist()]
    by_axis = {f"acc {a}": hit[[x == a for x in axis]].mean().item() * 100 for a in AXES}
    motion = hit.mean()
    return by_axis | {"t2v R@1": (t2v_rank < 1).float().mean().item() * 100, "t2v R@5": (t2v_rank < 5).float().mean().item() * 100,
            "v2t R@1": (v2t_rank < 1).float().mean().item() * 100, "v2t R@5": (v2t_rank < 5).float().mean().item() * 100,
            "motion acc": motion.item() * 100}


def evaluate_run(run: Path) -> tuple[str, dict, dict]:
    recipe = load_recipe(run / "recipe.yaml")
    plan = resolve(recipe)
    model = model_from_plan(plan).eval()
    state = load_file(str(run / "checkpoints" / "best.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.heads.")}, strict=False)
    cache = Path(recipe.data.cache_dir)
    val = build_dataset(recipe.data.dataset.name, recipe.data.dataset.options, cache)["val"]
    data = load_pairs(val, ("video", "text"), ("video",))
    latents = {m: cached_latents(model.encoders[m], plan.towers[m].encoder.as_dict(), data.values[m], cache,
                                 torch.device("cpu"), EncodeOptions(recipe.data.encode_batch_size, label=f"{m}/val"))
               for m in ("video", "text")}   # the training run's cache entries
    # the emoji of a clip: its file is clips/<emoji codepoints>-<motion>.mp4
    motions = [next(m for m in MOTIONS if Path(v).stem.endswith("-" + m)) for v in data.values["video"]]
    idents = [Path(v).stem[:-len(m) - 1] for v, m in zip(data.values["video"], motions)]
    emoji = torch.tensor([sorted(set(idents)).index(i) for i in idents])
    trained = scores(model, latents, data.pairs, emoji, motions)
    untrained = scores(model.with_untrained_heads(recipe.seed).eval(), latents, data.pairs, emoji, motions)
    return recipe.modalities["video"].head.options["pooling"], trained, untrained


def main(runs: list[str]) -> None:
    rows: dict[str, list] = {}
    for run in runs:
        pooling, trained, untrained = evaluate_run(Path(run))
        rows.setdefault(pooling, []).append((trained, untrained))
        print(json.dumps({"run": run, "pooling": pooling, "trained": trained, "untrained": untrained}))
    print("| pooling | heads | " + " | ".join(METRICS) + " |\n|---|---|" + "---|" * len(METRICS))
    for pooling, results in rows.items():
        for which, k in (("untrained", 1), ("trained", 0)):
            cells = []
            for m in METRICS:
                vals = [r[k][m] for r in results]
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(f"{statistics.mean(vals):.1f} ± {sd:.1f}")
            print(f"| {pooling} | {which} ({len(results)} seeds) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
