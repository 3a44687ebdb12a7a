"""`fuse report`: one self-contained HTML page to look at what a run (or an export) retrieves.

Everything is inlined (plots as PNG data URIs, thumbnails as JPEG, audio as WAV data URIs) and a
Content-Security-Policy forbids any fetch, so the page opens offline, in a mail, anywhere. Sections:
recipe, metric curves, before/after table, sampled queries with their top-5 (the right item marked),
the worst-ranked queries, and a 2-D PCA of both towers' embeddings with the modality gap (the
distance between the two centroids, Liang et al. 2022); for zero-shot, the confusion matrix and
per-class accuracy (``fuse.model.report_zeroshot``). ``compare_page`` puts several runs side by side.
"""

from __future__ import annotations

import html
import json
import random
from pathlib import Path

import torch
import yaml

from fuse.base.errors import DataError
from fuse.model.report_html import data_uri, metrics_table, page, png_of, query_block, section, thumbnail


def run_files(path: Path) -> tuple[Path | None, Path]:
    """(run dir or None, export dir) of a run dir or an export dir."""
    path = Path(path)
    if (path / "export").is_dir() and (path / "recipe.yaml").exists():
        return path, path / "export"
    return None, path


def val_manifest(run_dir: Path | None, data: str | None) -> tuple[Path, Path | None]:
    """The manifest to show (``--data`` or the run's validation split) and the latent-store cache dir."""
    from fuse.data.datasets import default_cache_root

    cache = None
    if run_dir is not None:
        from fuse.data.load import source_manifests
        from fuse.recipes.recipe import load_recipe

        recipe = load_recipe(run_dir / "recipe.yaml")
        cache = Path(recipe.data.cache_dir or default_cache_root()).expanduser()
        if data is None and recipe.data.given:
            found = source_manifests(recipe.data, cache, "data").get("val")
            if isinstance(found, Path):
                return found, cache
    if data is None:
        where = f"run {run_dir}" if run_dir else "an export"
        raise DataError(f"{where} has no validation data to show: give --data MANIFEST (a paired JSONL).")
    return Path(data), cache


def retrieval_sections(model, manifest: Path, cache: Path | None, samples: int, seed: int) -> tuple[list[str], dict]:
    """Sampled queries' top-5, the worst-ranked queries and the modality-gap projection."""
    from fuse.data.manifest import load_pairs
    from fuse.eval.run import file_modalities, pick_pair

    a, b = pick_pair(model, None)
    files = file_modalities(model, (a, b))
    query, cand = (b, a) if a in files and b not in files else (a, b)  # inline (text) queries, file candidates
    data = load_pairs(manifest, (a, b), files)
    emb = {m: model.embed(m, data.values[m], cache_dir=cache) for m in (a, b)}
    qcol, ccol = data.modalities.index(query), data.modalities.index(cand)
    sims = emb[query] @ emb[cand].T
    order = sims.argsort(dim=1, descending=True)
    positives = [set() for _ in data.values[query]]
    for row in data.pairs.tolist():
        positives[row[qcol]].add(row[ccol])
    rank = [min(order[i].tolist().index(j) for j in positives[i]) + 1 for i in range(len(positives))]
    qkind, ckind = query in files, cand in files

    def block(i: int) -> str:
        return query_block(thumbnail(data.values[query][i], qkind), f"(correct item at rank {rank[i]})",
                           [(thumbnail(data.values[cand][j], ckind), j in positives[i]) for j in order[i, :5].tolist()])

    rng = random.Random(seed)
    picked = sorted(rng.sample(range(len(positives)), min(samples, len(positives))))
    worst = sorted(range(len(positives)), key=lambda i: -rank[i])[:samples]
    gap, proj = modality_gap(emb[a], emb[b], (a, b))
    r1 = 100 * sum(r == 1 for r in rank) / len(rank)
    sections = [
        section("examples", f"{query} → {cand}: sampled queries", f"<p>{len(positives)} queries over "
                f"{len(data.values[cand])} candidates from {html.escape(str(manifest))}; R@1 {r1:.1f}%. "
                "Green: a correct item.</p>" + "".join(block(i) for i in picked)),
        section("failures", "worst-ranked queries", "".join(block(i) for i in worst)),
        section("gap", "modality gap", f"<p>Centroid distance between the {a} and {b} embeddings: "
                f"<b id=gap-value>{gap:.3f}</b> (0 = the clouds overlap; 2 = opposite poles).</p>"
                f'<img alt="PCA of both modalities" src="{proj}">'),
    ]
    return sections, {"gap": gap, "R@1": r1, "queries": len(positives)}


def modality_gap(ea: torch.Tensor, eb: torch.Tensor, names: tuple[str, str]) -> tuple[float, str]:
    """‖mean(a) − mean(b)‖ of the L2-normalised embeddings, and a PCA scatter of both as a PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gap = float((ea.float().mean(0) - eb.float().mean(0)).norm())
    both = torch.cat([ea, eb]).float()
    centred = both - both.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    xy = (centred @ v[:2].T).numpy()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(xy[:len(ea), 0], xy[:len(ea), 1], s=6, alpha=0.5, label=names[0])
    ax.scatter(xy[len(ea):, 0], xy[len(ea):, 1], s=6, alpha=0.5, label=names[1])
    ax.set_title(f"PCA of the embeddings; gap {gap:.3f}")
    ax.legend()
    fig.tight_layout()
    return gap, png_of(fig)


def run_sections(run_dir: Path | None) -> list[str]:
    """Recipe, metric curves and the before/after table of a run dir (nothing for a bare export)."""
    if run_dir is None:
        return []
    out = [section("recipe", "recipe", f"<pre>{html.escape((run_dir / 'recipe.yaml').read_text())}</pre>")]
    if (run_dir / "metrics.png").exists():
        out.append(section("curves", "metric curves",
                           f'<img alt="metrics" style="max-width:100%" src="{data_uri((run_dir / "metrics.png").read_bytes(), "image/png")}">'))
    results = json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").exists() else {}
    columns = {k: v for k, v in results.items() if isinstance(v, dict)}
    if columns:
        out.append(section("table", "before / after training", metrics_table(columns)))
    return out


def report_page(path: str | Path, data: str | None = None, samples: int = 8, seed: int = 0,
                device: str = "cpu", task: str = "retrieval", zeroshot: dict | None = None) -> tuple[str, dict]:
    """The HTML of one run's (or export's) report and its headline numbers. ``task="zeroshot"`` reads a
    labelled manifest (``data``) and shows the confusion matrix; ``zeroshot`` holds the options of
    ``fuse.eval.run.zeroshot_inputs`` (classes, label_field, templates, query_modality, ...)."""
    from fuse.model.load import load_aligned

    run_dir, export = run_files(Path(path))
    if task == "zeroshot" and data is None:
        raise DataError("--task zeroshot needs --data LABELS.jsonl: items with a label field (a run's "
                        "validation split holds pairs, not labels).")
    manifest, cache = val_manifest(run_dir, data)
    model = load_aligned(export, device=device)
    if task == "zeroshot":
        from fuse.model.report_zeroshot import zeroshot_sections

        sections, numbers = zeroshot_sections(model, manifest, cache, samples, seed, zeroshot or {})
    else:
        sections, numbers = retrieval_sections(model, manifest, cache, samples, seed)
    return page(f"fuse report: {Path(path).resolve().name}", run_sections(run_dir) + sections), numbers


def compare_page(runs: list[str | Path]) -> str:
    """Several runs side by side: their final metrics, the recipe fields that differ, their curves."""
    def flat(node, prefix=""):
        if isinstance(node, dict):
            return {k2: v2 for k, v in node.items() for k2, v2 in flat(v, f"{prefix}{k}.").items()}
        return {prefix.rstrip("."): json.dumps(node)}

    names, finals, recipes, curves = [], {}, {}, []
    for r in map(Path, runs):
        if not (r / "eval.json").exists():
            raise DataError(f"--compare {r}: not a finished run dir (no eval.json).")
        names.append(r.name)
        results = json.loads((r / "eval.json").read_text())
        finals[r.name] = results.get("after") or results.get("before") or {}
        recipes[r.name] = flat(yaml.safe_load((r / "recipe.yaml").read_text()))
        if (r / "metrics.png").exists():
            curves.append(f'<div><b>{html.escape(r.name)}</b><img alt="{html.escape(r.name)}" '
                          f'src="{data_uri((r / "metrics.png").read_bytes(), "image/png")}"></div>')
    keys = sorted({k for f in recipes.values() for k in f})
    differ = [k for k in keys if len({recipes[n].get(k) for n in names}) > 1 and k != "output_dir"]
    diff = "<table><tr><th>recipe field</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>" + \
        "".join("<tr><td>" + html.escape(k) + "</td>" + "".join(f"<td>{html.escape(recipes[n].get(k, '-'))}</td>"
                                                                for n in names) + "</tr>" for k in differ) + "</table>"
    return page("fuse report: " + ", ".join(names), [
        section("table", "final metrics (best epoch)", metrics_table(finals)),
        section("recipe", "recipe fields that differ", diff if differ else "<p>none</p>"),
        section("curves", "metric curves", f'<div class="runs">{"".join(curves)}</div>')])
