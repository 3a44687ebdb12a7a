"""What `fuse select` writes: a ranked table, select.json, a heatmap per modality pair, a recipe for the top pair."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from fuse.base.atomic import write_text
from fuse.base.errors import RecipeError
from fuse.model.selection import METRICS, CandidatesFile
from fuse.recipes.strict_yaml import load_strict

TITLES = {"linear_cka": "linear CKA", "rbf_cka": "RBF CKA (minibatch unbiased HSIC)", "mutual_knn": "mutual k-NN"}


def format_table(report: dict) -> str:
    """The ranking as a fixed-width table, with the cost columns (parameters, encode throughput)."""
    head = f"{'rank':>4}  {'pair':<34} {'linear CKA':>10} {'RBF CKA':>8} {'mutual kNN':>10} {'params (M)':>10}  " \
           f"{'encode values/s':<24}"
    lines = [head, "-" * len(head)]
    for r in report["ranking"]:
        a, b = r["candidates"]
        speed = " / ".join(f"{r['throughput'][c]:.3g}" for c in (a, b))
        lines.append(f"{r['rank']:>4}  {a + ' + ' + b:<34} {r['linear_cka']:>10.4f} {r['rbf_cka']:>8.4f} "
                     f"{r['mutual_knn']:>10.4f} {r['parameters'] / 1e6:>10.1f}  {speed:<24}")
    lines.append(f"ranked by {report['rank_by']}; {report['ranking'][0]['n']} pairs; mutual kNN k={report['k']}; "
                 f"RBF CKA: unbiased HSIC over minibatches of {report['batch_size']}, bandwidth = "
                 f"{report['rbf_bandwidth']}")
    return "\n".join(lines)


def plot_heatmaps(report: dict, path: Path) -> None:
    """One row of heatmaps (one per score) for each modality pair: candidates of a x candidates of b."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(dict.fromkeys(tuple(r["pair"]) for r in report["ranking"]))
    fig, axes = plt.subplots(len(pairs), len(METRICS), squeeze=False,
                             figsize=(4.2 * len(METRICS), 0.6 + 3.2 * len(pairs)))
    for row, (ma, mb) in enumerate(pairs):
        rows = [r for r in report["ranking"] if tuple(r["pair"]) == (ma, mb)]
        la = [e["label"] for e in report["encoders"][ma]]
        lb = [e["label"] for e in report["encoders"][mb]]
        for col, metric in enumerate(METRICS):
            grid = [[next(r[metric] for r in rows if r["candidates"] == [a, b]) for b in lb] for a in la]
            ax = axes[row][col]
            im = ax.imshow(grid, cmap="viridis", aspect="auto")
            ax.set_xticks(range(len(lb)), lb, rotation=30, ha="right", fontsize=8)
            ax.set_yticks(range(len(la)), la, fontsize=8)
            ax.set_xlabel(mb)
            ax.set_ylabel(ma)
            ax.set_title(TITLES[metric], fontsize=10)
            middle = (min(map(min, grid)) + max(map(max, grid))) / 2
            for i, line in enumerate(grid):
                for j, v in enumerate(line):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="k" if v > middle else "w")
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def top_recipe(report: dict, cfg: CandidatesFile, candidates_path: Path, sample: Path) -> str:
    """A ready recipe for the top-ranked pair: the template's (cfg.recipe) with its encoders swapped,
    or a minimal frozen-encoder InfoNCE recipe that trains on the sample."""
    top = report["ranking"][0]
    specs = {e["modality"]: e["spec"] for m in report["encoders"].values() for e in m if e["label"] in top["candidates"]
             and e["modality"] in top["pair"]}
    header = (f"# Written by `fuse select`: the top-ranked pair by {report['rank_by']} "
              f"({' + '.join(top['candidates'])}: linear CKA {top['linear_cka']:.3f}, RBF CKA {top['rbf_cka']:.3f}, "
              f"mutual kNN {top['mutual_knn']:.3f}).\n#   fuse train <this file>\n")
    if cfg.recipe:
        template = (candidates_path.parent / cfg.recipe).resolve()
        if not template.exists():
            raise RecipeError(f"{candidates_path}: recipe: template {template} not found.")
        data = load_strict(template.read_text(encoding="utf-8")) or {}
        mods = data.setdefault("modalities", {})
        for m in list(mods):
            if m not in specs:
                raise RecipeError(f"{candidates_path}: recipe: the template {template} has modality '{m}', which "
                                  f"the top pair ({', '.join(top['pair'])}) lacks; use a template with these two.")
        for m, spec in specs.items():
            mods.setdefault(m, {})["encoder"] = spec
        header += f"# Template: {template}\n"
    else:
        data = {"name": "selected", "output_dir": "runs/selected", "embed_dim": 256,
                "modalities": {m: {"encoder": spec, "head": {"name": "residual-mlp"}} for m, spec in specs.items()},
                "objectives": [{"name": "infonce"}],
                "data": {"train": str(sample.resolve())},
                "train": {"epochs": 10}}
        header += "# Trains on the scored sample; add data.val (held-out pairs) to measure retrieval.\n"
    # The top pair's own run folder, never the template's (training there would meet the template's run).
    data["output_dir"] = "runs/" + "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", c) for c in top["candidates"])
    return header + yaml.safe_dump(data, sort_keys=False, width=120)


def write_outputs(report: dict, cfg: CandidatesFile, candidates_path: Path, sample: Path, out: Path) -> dict[str, Path]:
    """select.json, heatmap.png and recipe.yaml under ``out``; returns their paths."""
    from fuse.recipes.plan import load_plan

    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "select.json", "heatmap": out / "heatmap.png", "recipe": out / "recipe.yaml"}
    write_text(paths["json"], json.dumps(report, indent=2))
    plot_heatmaps(report, paths["heatmap"])
    write_text(paths["recipe"], top_recipe(report, cfg, Path(candidates_path), Path(sample)))
    load_plan(paths["recipe"])   # what we wrote must validate and resolve: fail here, not at `fuse train`
    return paths
