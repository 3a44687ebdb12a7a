"""Seeds and sweeps: many runs of one recipe, one after another, and a table that compares them.

    fuse train recipes/quickstart.yaml --seeds 0,1,2                  # RUN/seed-N, seeds.md: mean ± std
    fuse sweep recipes/quickstart.yaml --grid train.batch_size=128,256 --grid optim.lr=1e-3,3e-3

Every point is validated (field names and values) before the first one trains. Points share the
recipe's data.cache_dir, so frozen towers are encoded by the first run and read from the latent
store by every later one. The sweep's folder is fuse's own (marked ``sweep``); each point's run dir
is an ordinary owned run, and ``<point>.point.json`` beside it says {"done": true} once it finished:
running the same command again skips finished points, resumes one that left a checkpoint and
starts the rest (an interrupted sweep loses no finished run); ``--index I`` runs one point, so a
SLURM array runs the same command with ``--index $SLURM_ARRAY_TASK_ID`` (docs/workflow.md).
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fuse.base.atomic import write_text
from fuse.base.owned import claim
from fuse.base.errors import RecipeError
from fuse.recipes.recipe import load_recipe, parse_override
from fuse.recipes.strict_yaml import read_yaml
from fuse.training.metrics import finite_json, higher_is_better


@dataclass
class Point:
    """One run of a sweep: its folder name and the overrides that make it."""

    name: str
    values: dict[str, Any]

    def overrides(self) -> list[str]:
        return [f"{k}={json.dumps(v)}" for k, v in self.values.items()]


def split_values(text: str) -> list[str]:
    """'0.05,0.07' -> ['0.05', '0.07']; commas inside [] or {} stay (a list value)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur]


def parse_grid(items: list[str]) -> dict[str, list]:
    """``--grid key=v1,v2`` options -> {key: [values]}; values parse as YAML, as overrides do."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, rest = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"--grid '{item}' must look like key.sub=v1,v2 (e.g. train.batch_size=128,256).")
        values = [parse_override(f"{key}={v.strip()}")[1] for v in split_values(rest) if v.strip()]
        if not values:
            raise RecipeError(f"--grid '{item}': no values; give one or more, comma-separated (key=v1,v2).")
        grid[key] = values
    return grid


def read_sweep_file(path: str | Path) -> dict:
    """A sweep YAML: {grid: {key: [values]}, samples: N, seed: S}, read strictly (fuse.recipes.strict_yaml:
    bounded, UTF-8, no duplicate keys, alias bombs or tags; one line for each)."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"Sweep file not found: {path}")
    data = read_yaml(path, "--config") or {}
    unknown = set(data) - {"grid", "samples", "seed"} if isinstance(data, dict) else set()
    if not isinstance(data, dict) or unknown or not isinstance(data.get("grid"), dict):
        raise RecipeError(f"{path}: a sweep file is a mapping with grid: {{key: [values]}} and optional samples, "
                          f"seed{'; unknown: ' + ', '.join(sorted(unknown)) if unknown else ''}.")
    for key, values in data["grid"].items():
        if not isinstance(values, list) or not values:
            raise RecipeError(f"{path}: grid.{key}: give a non-empty list of values, e.g. [0.05, 0.07].")
    for key in ("samples", "seed"):
        if key in data and (not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 0):
            raise RecipeError(f"{path}: {key}: give a whole number (got {data[key]!r}).")
    return data


def slug(values: dict[str, Any]) -> str:
    """A folder-safe name from the swept values: 'init_temperature=0.05-batch_size=128'."""
    parts = [f"{k.rsplit('.', 1)[-1]}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in values.items()]
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", "-".join(parts))[:120]


MAX_POINTS = 10_000   # a sweep runs every point: more is a mistake, or a job for --samples


def grid_points(grid: dict[str, list], samples: int | None = None, seed: int = 0) -> list[Point]:
    """The product of the grid's values (or ``samples`` of them, drawn with ``seed``), named NNN-<values>.
    The product is never built: a point is decoded from its index, so a 10^9-point grid with --samples 2
    costs two points."""
    sizes = [len(v) for v in grid.values()]
    total = math.prod(sizes)
    if samples is not None:
        if samples < 1:
            raise RecipeError(f"--samples {samples}: give a positive number of points.")
        if samples > MAX_POINTS:
            raise RecipeError(f"--samples {samples}: a sweep runs at most {MAX_POINTS:,} points.")
        indices = sorted(random.Random(seed).sample(range(total), min(samples, total)))
    elif total > MAX_POINTS:
        raise RecipeError(f"the grid has {total:,} points (more than {MAX_POINTS:,}); give --samples N to run N of "
                          "them, or fewer values.")
    else:
        indices = range(total)
    combos = []
    for index in indices:   # itertools.product's order: the last key varies fastest
        values = []
        for size in reversed(sizes):
            index, k = divmod(index, size)
            values.append(k)
        combos.append({key: vals[k] for (key, vals), k in zip(grid.items(), reversed(values))})
    return [Point(f"{i:03d}-{slug(c)}", c) for i, c in enumerate(combos)]


def validate_points(recipe: str, overrides: list[str], points: list[Point], root: Path) -> list:
    """Every point's plan, resolved before any trains: a bad key or value is one line naming the point."""
    from fuse.recipes.plan import load_plan

    plans = []
    for p in points:
        try:
            plans.append(load_plan(recipe, overrides + p.overrides() + [f"output_dir={json.dumps(str(root / p.name))}"]))
        except RecipeError as exc:
            raise RecipeError(f"sweep point {p.name} ({', '.join(p.overrides())}): {exc}") from None
    return plans


def final_metrics(run_dir: Path) -> dict[str, float]:
    """A finished run's validation metrics: eval.json's 'after' (the best epoch), else its last val row."""
    results = json.loads((run_dir / "eval.json").read_text())
    if results.get("after"):
        return results["after"]
    from fuse.eval.metrics_file import read_metrics

    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("kind") == "val"]
    return {k: v for k, v in rows[-1].items() if k not in ("kind", "step", "epoch")} if rows else {}


def run_points(recipe: str, overrides: list[str], points: list[Point], root: Path, *, index: int | None = None,
               echo: Callable[[str], None] = print) -> list[tuple[Point, dict]]:
    """Train the points not yet done (or only ``index``), one after another; (point, metrics) of every done one."""
    from fuse.training.loop import train

    plans = validate_points(recipe, overrides, points, root)
    if index is not None and not 0 <= index < len(points):
        raise RecipeError(f"--index {index}: this sweep has {len(points)} points (0..{len(points) - 1}).")
    claim(root, "sweep", "sweep folder")  # a user's folder, or a single run, is refused before any training
    for i, (p, plan) in enumerate(zip(points, plans)):
        run_dir = root / p.name
        marker = root / f"{p.name}.point.json"  # beside the run: the run dir itself is the run's own
        if (index is not None and i != index) or (marker.exists() and json.loads(marker.read_text()).get("done")):
            continue
        resume = (run_dir / "checkpoints" / "state.pt").exists() and marker.exists()
        echo(f"[{i + 1}/{len(points)}] {p.name}: {'resuming' if resume else 'training'} ({' '.join(p.overrides())})")
        write_text(marker, json.dumps({"values": p.values, "done": False}))
        train(plan, resume=resume)
        write_text(marker, json.dumps({"values": p.values, "done": True}))
    done = []
    for p in points:
        marker = root / f"{p.name}.point.json"
        if marker.exists() and json.loads(marker.read_text()).get("done"):
            done.append((p, final_metrics(root / p.name)))
    return done


def ranked_table(done: list[tuple[Point, dict]], metric: str, root: Path) -> list[dict]:
    """sweep.json, sweep.md and sweep.png in ``root``: the finished points, best ``metric`` first."""
    sign = 1 if higher_is_better(metric) else -1
    rows = sorted(({"name": p.name, "values": p.values, "metrics": m} for p, m in done),
                  key=lambda r: (r["metrics"].get(metric) is None, -sign * (r["metrics"].get(metric) or 0.0)))
    write_text(root / "sweep.json", json.dumps(finite_json({"metric": metric, "runs": rows}), indent=2))
    keys = list(done[0][0].values) if done else []
    shown = [k for k in (rows[0]["metrics"] if rows else {}) if "R@" in k and k.startswith("mean/")] or [metric]
    lines = ["| rank | run | " + " | ".join(keys + shown) + " |", "|" + "---|" * (2 + len(keys) + len(shown))]
    for i, r in enumerate(rows, 1):
        cells = [json.dumps(r["values"][k]) for k in keys] + [_fmt(r["metrics"].get(k)) for k in shown]
        lines.append(f"| {i} | {r['name']} | " + " | ".join(cells) + " |")
    write_text(root / "sweep.md", "\n".join(lines) + "\n")
    if rows:
        plot_sweep(rows, keys, metric, root / "sweep.png")
    return rows


def _order(text: str):
    """Numbers in numeric order before anything else in text order."""
    v = json.loads(text)
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, text)


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else "-"


def plot_sweep(rows: list[dict], keys: list[str], metric: str, png: Path) -> None:
    """The metric against each swept value: one panel per key, every run a point, the best per value a line."""
    import matplotlib

    matplotlib.use("Agg")

    matplotlib.rcParams["text.parse_math"] = False   # labels are text as written ('costs $5^$')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        labels = sorted({json.dumps(r["values"][key]) for r in rows}, key=_order)
        x = {s: i for i, s in enumerate(labels)}
        pts = [(x[json.dumps(r["values"][key])], r["metrics"].get(metric)) for r in rows
               if r["metrics"].get(metric) is not None]
        if pts:
            ax.scatter(*zip(*pts), s=18, alpha=0.6)
        best = [max((v for i, v in pts if i == j), default=None) for j in range(len(labels))]
        ax.plot([j for j, b in enumerate(best) if b is not None], [b for b in best if b is not None], marker="o")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def seed_table(done: list[tuple[Point, dict]], root: Path) -> str:
    """seeds.json and seeds.md: every validation metric's mean ± std over the seeds, and each seed's value."""
    keys = [k for k in (done[0][1] if done else {}) if isinstance(done[0][1][k], (int, float))]
    stats = {}
    for k in keys:
        vals = [m[k] for _, m in done if isinstance(m.get(k), (int, float))]
        stats[k] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                    "seeds": {str(p.values["seed"]): m.get(k) for p, m in done}}
    write_text(root / "seeds.json", json.dumps(finite_json(stats), indent=2))
    seeds = [str(p.values["seed"]) for p, _ in done]
    lines = ["| metric | mean ± std | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|" + "---|" * (2 + len(seeds))]
    for k, s in stats.items():
        lines.append(f"| {k} | {s['mean']:.2f} ± {s['std']:.2f} | " + " | ".join(_fmt(s["seeds"][x]) for x in seeds) + " |")
    table = "\n".join(lines) + "\n"
    write_text(root / "seeds.md", table)
    return table


def run_seeds(recipe: str, overrides: list[str], seeds: str, echo: Callable[[str], None] = print) -> Path:
    """``fuse train --seeds 0,1,2``: one run per seed in OUTPUT_DIR/seed-N, then the mean ± std table."""
    try:
        values = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise RecipeError(f"--seeds '{seeds}': give comma-separated integers, e.g. 0,1,2.") from None
    if not values or len(set(values)) != len(values):
        raise RecipeError(f"--seeds '{seeds}': give one or more distinct integers, e.g. 0,1,2.")
    root = Path(load_recipe(recipe, overrides).output_dir)
    points = [Point(f"seed-{s}", {"seed": s}) for s in values]
    done = run_points(recipe, overrides, points, root, echo=echo)
    echo(seed_table(done, root))
    echo(f"seed table: {root / 'seeds.md'} ({len(done)} of {len(points)} seeds done)")
    return root
