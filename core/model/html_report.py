"""`fuse report`: one self-contained HTML page to look at what a run (or an export) retrieves.

Everything is inlined (plots as PNG data URIs, thumbnails as JPEG, audio as WAV data URIs) and a
Content-Security-Policy forbids any fetch, so the page opens offline, in a mail, anywhere. Sections:
recipe, metric curves, before/after table, sampled queries with their top-5 (the right item marked),
the worst-ranked queries, and a 2-D PCA of both towers' embeddings with the modality gap (the
distance between the two centroids, Liang et al. 2022). ``compare_page`` puts several runs side by side.
"""

from __future__ import annotations

import base64
import html
import io
import json
import random
from pathlib import Path

import torch
import yaml

from fuse.api.errors import DataError

CSP = "default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'"
STYLE = """body{font:14px system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}pre{background:#f6f6f6;padding:8px;max-height:320px;overflow:auto}
.q{margin:10px 0;padding:6px;border:1px solid #eee}.hits{display:flex;gap:8px}
.hit{width:112px;font-size:11px;text-align:center;border:3px solid transparent;padding:2px}
.hit.ok{border-color:#2a2}.hit img{width:96px;height:96px;object-fit:contain}.runs{display:flex;gap:12px}
.runs img{width:100%}.muted{color:#777}"""


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png_of(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return data_uri(buf.getvalue(), "image/png")


def thumbnail(value: str, is_file: bool) -> str:
    """An item as HTML: inline values (text) as text; a file by what it holds, not by its kind's name: an
    image as a small JPEG, audio as a player, a video as its first frame; anything else as its name."""
    if not is_file:
        return html.escape(value)
    esc = html.escape(Path(value).name)
    readers = (_image_of, _audio_of, _video_of)
    for read in readers:
        try:
            return read(value) + f"<br>{esc}"
        except Exception:  # noqa: BLE001, S112 - not this kind of file: try the next reader
            continue
    return f"{esc}<br><span class=muted>(not shown)</span>"


def _jpeg(img) -> str:
    img = img.convert("RGB")
    img.thumbnail((96, 96))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return f'<img alt="thumbnail" src="{data_uri(buf.getvalue(), "image/jpeg")}">'


def _image_of(path: str) -> str:
    from PIL import Image

    with Image.open(path) as img:
        return _jpeg(img)


def _audio_of(path: str) -> str:
    import soundfile as sf

    wav, rate = sf.read(path, dtype="float32", always_2d=True, frames=16000 * 10)
    buf = io.BytesIO()
    sf.write(buf, wav, rate, format="WAV", subtype="PCM_16")
    return f'<audio controls src="{data_uri(buf.getvalue(), "audio/wav")}"></audio>'


def _video_of(path: str) -> str:
    import av

    with av.open(path) as box:
        return _jpeg(next(box.decode(video=0)).to_image())


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
    from fuse.eval.api import file_modalities, pick_pair

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
        hits = "".join(f'<div class="hit{" ok" if j in positives[i] else ""}">{"✓ " if j in positives[i] else ""}'
                       f"#{r + 1}<br>{thumbnail(data.values[cand][j], ckind)}</div>"
                       for r, j in enumerate(order[i, :5].tolist()))
        return (f'<div class="q"><b>{thumbnail(data.values[query][i], qkind)}</b> '
                f'<span class=muted>(correct item at rank {rank[i]})</span><div class="hits">{hits}</div></div>')

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


def section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}"><h2>{html.escape(title)}</h2>{body}</section>'


def metrics_table(columns: dict[str, dict]) -> str:
    """Rows: metrics; columns: result sets (before / after, or runs)."""
    keys = list(dict.fromkeys(k for c in columns.values() for k, v in c.items() if isinstance(v, (int, float))))
    head = "<tr><th>metric</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in columns) + "</tr>"
    rows = "".join("<tr><td>" + html.escape(k) + "</td>" + "".join(
        f"<td>{c[k]:.2f}</td>" if isinstance(c.get(k), (int, float)) else "<td>-</td>" for c in columns.values())
        + "</tr>" for k in keys)
    return f"<table>{head}{rows}</table>"


def page(title: str, sections: list[str]) -> str:
    return (f'<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
            f'content="{CSP}"><title>{html.escape(title)}</title><style>{STYLE}</style></head><body>'
            f"<h1>{html.escape(title)}</h1>" + "".join(sections) + "</body></html>")


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
                device: str = "cpu") -> tuple[str, dict]:
    """The HTML of one run's (or export's) report and its headline numbers."""
    from fuse.model.load import load_aligned

    run_dir, export = run_files(Path(path))
    manifest, cache = val_manifest(run_dir, data)
    model = load_aligned(export, device=device)
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
