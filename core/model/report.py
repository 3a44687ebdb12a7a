"""`fuse report`: one self-contained HTML page to look at what a run (or an export) retrieves.

Everything is inlined (plots as PNG data URIs, thumbnails as JPEG, audio as WAV data URIs) and a
Content-Security-Policy forbids any fetch, so the page opens offline, in a mail, anywhere. Sections:
recipe, metric curves, before/after table, sampled queries with their top-5 (the right item marked),
the worst-ranked queries, and a 2-D PCA of both towers' embeddings with the modality gap (the
distance between the two centroids, Liang et al. 2022); for zero-shot, the confusion matrix and
per-class accuracy (``fuse.model.report_zeroshot``). ``fuse.model.report_compare`` compares runs.
"""

from __future__ import annotations

import html
import json
import random
from pathlib import Path

import torch

from fuse.base import foreign
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
    """Both directions' sampled queries and worst-ranked queries (each hit with its score, the correct item's
    rank and score), and the modality-gap projection. Text queries image (or audio) candidates first."""
    from fuse.data.manifest import load_pairs
    from fuse.eval.retrieval import retrieval_metrics
    from fuse.eval.run import encode_distinct, file_modalities, pick_pair

    a, b = pick_pair(model, None)
    files = file_modalities(model, (a, b))
    query, cand = (b, a) if a in files and b not in files else (a, b)  # inline (text) queries, file candidates
    data = load_pairs(manifest, (a, b), files)
    emb = {m: model.project(m, encode_distinct(model, m, data.values[m], cache_dir=cache)) for m in (a, b)}
    qcol, ccol = data.modalities.index(query), data.modalities.index(cand)
    sections, numbers = [], {}
    for keys, (q, c, cols) in zip((("examples", "failures"), ("examples-back", "failures-back")),
                                  ((query, cand, (qcol, ccol)), (cand, query, (ccol, qcol)))):
        body, queries = _direction(data, emb, (q, c), cols, files, samples, seed)
        # fuse eval's own metric on fuse eval's own ranking (fuse.eval.rank), so R@1 here is eval.json's
        r1 = retrieval_metrics(emb[q], emb[c], data.pairs[:, list(cols)], ks=(1,))["R@1"]
        sections += [
            section(keys[0], f"{q} → {c}: sampled queries", f"<p>{queries} {html.escape(q)} queries over "
                    f"{len(data.values[c])} {html.escape(c)} candidates from {html.escape(str(manifest))}; R@1 "
                    f"{r1:.1f}%. Each result shows its rank and cosine score; green: a correct item (shown after "
                    "the top 5 when it ranks lower).</p>" + body["picked"]),
            section(keys[1], f"{q} → {c}: worst-ranked queries", body["worst"])]
        numbers = numbers or {"R@1": r1, "queries": queries}
    gap, proj = modality_gap(emb[a], emb[b], (a, b))
    sections.append(section("gap", "modality gap", f"<p>Centroid distance between the {a} and {b} embeddings: "
                            f"<b id=gap-value>{gap:.3f}</b> (0 = the clouds overlap; 2 = opposite poles).</p>"
                            f'<img alt="PCA of both modalities" src="{proj}">'))
    return sections, {"gap": gap, **numbers}


def _direction(data, emb, names: tuple[str, str], cols: tuple[int, int], files, samples: int,
               seed: int) -> tuple[dict, int]:
    """One direction's sampled and worst query blocks (HTML) and how many queries it has. Ranks come from
    fuse eval's bounded ranking (``fuse.eval.rank``: tiles, ties to the lower index), never an N x N matrix."""
    from fuse.eval.rank import ranks_of_best_positive, topk

    q, c = names
    positives = [set() for _ in data.values[q]]
    for row in data.pairs.tolist():
        positives[row[cols[0]]].add(row[cols[1]])
    rank = ranks_of_best_positive(emb[q], emb[c], data.pairs[:, list(cols)]).tolist()
    order = topk(emb[q], emb[c], 5)[1]
    qfile, cfile = q in files, c in files

    def score(i: int, j: int) -> float:
        return float(emb[q][i] @ emb[c][j])

    def hit(i: int, j: int) -> tuple[str, bool]:
        return f"{thumbnail(data.values[c][j], cfile)}<br><span class=muted>score {score(i, j):.3f}</span>", \
            j in positives[i]

    def block(i: int) -> str:
        best = min(positives[i], key=lambda j: (-score(i, j), j))   # the correct item that ranks first
        hits = [hit(i, j) for j in order[i, :5].tolist()]
        if rank[i] > 5:
            hits.append((*hit(i, best), rank[i]))
        return query_block(thumbnail(data.values[q][i], qfile), f"(correct item at rank {rank[i]}, score "
                           f"{score(i, best):.3f})", hits)

    scored = [i for i in range(len(positives)) if rank[i]]
    picked = sorted(random.Random(seed).sample(scored, min(samples, len(scored))))
    worst = sorted(scored, key=lambda i: (-rank[i], i))[:samples]
    return {"picked": "".join(block(i) for i in picked), "worst": "".join(block(i) for i in worst)}, len(scored)


def modality_gap(ea: torch.Tensor, eb: torch.Tensor, names: tuple[str, str]) -> tuple[float, str]:
    """‖mean(a) − mean(b)‖ of the L2-normalised embeddings, and a PCA scatter of both as a PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")

    matplotlib.rcParams["text.parse_math"] = False   # labels are text as written ('costs $5^$')
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
    recipe = foreign.read_text(run_dir / "recipe.yaml", "fuse report", foreign.SMALL)
    out = [section("recipe", "recipe", f"<pre>{html.escape(recipe)}</pre>")]
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
