"""`fuse report --compare`: runs side by side, and leaderboards, on one self-contained page.

A sweep's folder holds its runs and, beside each, a ``NNN-….point.json`` marker, so the documented glob
``runs/sweep/000-*`` names both: paths are sorted into leaderboards (``fuse eval MODEL MODEL ... --out``),
finished run folders and the rest, which is left out with a note. Runs show their final metrics, the
recipe fields that differ as ``path: value → value`` (list items by index, so one changed temperature is
one line, not the whole objectives list), and their curves overlaid on shared axes: one chart per
metric, one line per run, read from each run's metrics.jsonl.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path

from fuse.base.errors import DataError
from fuse.model.report_html import data_uri, metrics_table, page, section

CHARTS = ("loss", "temperature", "lr")   # training rows' metrics drawn, then every validation recall


def sort_paths(paths: list[str | Path]) -> tuple[list[Path], list[Path], list[str]]:
    """(leaderboards, finished run folders, notes on the paths left out)."""
    from fuse.eval.leaderboard import is_leaderboard

    boards, runs, notes = [], [], []
    for path in map(Path, paths):
        if is_leaderboard(path):
            boards.append(path)
        elif path.is_dir() and (path / "recipe.yaml").is_file() and (path / "eval.json").is_file():
            runs.append(path)
        elif path.is_dir() and (path / "recipe.yaml").is_file():
            notes.append(f"left out {path}: a run that has not finished (no eval.json)")
        else:
            notes.append(f"left out {path}: neither a run folder nor a leaderboard")
    return boards, runs, notes


def flat_fields(node, prefix: str = "") -> dict[str, str]:
    """Every leaf of a recipe as ``a.b[0].c`` -> its JSON text."""
    if isinstance(node, dict) and node:
        return {k2: v2 for k, v in node.items() for k2, v2 in flat_fields(v, f"{prefix}.{k}" if prefix else k).items()}
    if isinstance(node, list) and node:
        return {k2: v2 for i, v in enumerate(node) for k2, v2 in flat_fields(v, f"{prefix}[{i}]").items()}
    return {prefix: json.dumps(node)}


def differing_fields(recipes: dict[str, dict]) -> str:
    """The recipe fields whose values differ between runs, one line each: ``path: a → b``."""
    flats = {name: flat_fields(recipe) for name, recipe in recipes.items()}
    keys = list(dict.fromkeys(k for f in flats.values() for k in f))
    lines = [f"<li><code>{html.escape(k)}</code>: "
             + " → ".join(html.escape(f.get(k, "(absent)")) for f in flats.values()) + "</li>"
             for k in keys if k != "output_dir" and len({f.get(k) for f in flats.values()}) > 1]
    if not lines:
        return "<p>none</p>"
    return (f"<p>In run order ({html.escape(', '.join(flats))}):</p><ul id=differ>" + "".join(lines) + "</ul>")


def overlaid_curves(runs: dict[str, Path]) -> str:
    """One chart per metric (training loss, temperature, learning rate, each validation recall), one line
    per run, on shared axes; runs without metrics.jsonl are named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fuse.eval.metrics_file import read_metrics

    rows = {name: read_metrics(path / "metrics.jsonl") if (path / "metrics.jsonl").is_file() else []
            for name, path in runs.items()}
    val = list(dict.fromkeys(k for rs in rows.values() for r in rs if r.get("kind") == "val" for k in r if "R@" in k))
    charts = [(k, "train") for k in CHARTS] + [(k, "val") for k in val]
    images = []
    for key, kind in charts:
        lines = {name: [(r["step"], r[key]) for r in rs if r.get("kind") == kind and isinstance(r.get(key), (int, float))
                        and isinstance(r.get("step"), (int, float))] for name, rs in rows.items()}
        if not any(lines.values()):
            continue
        fig, ax = plt.subplots(figsize=(4.4, 3.0))
        for name, points in lines.items():
            if points:
                ax.plot(*zip(*points), marker="o" if kind == "val" else None, ms=3, label=name)
        ax.set_title(key if kind == "train" else f"val {key}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        images.append(f'<img alt="curve: {html.escape(key)}" src="{data_uri(buf.getvalue(), "image/png")}">')
    missing = [name for name, rs in rows.items() if not rs]
    note = f"<p class=muted>no metrics.jsonl: {html.escape(', '.join(missing))}</p>" if missing else ""
    return f'<div class="charts">{"".join(images)}</div>{note}' if images else note or "<p>no curves</p>"


def leaderboard_section(path: Path, n: int) -> str:
    """A leaderboard's table (a column per model, the average row last) and its bar chart."""
    from fuse.eval.leaderboard import plot_png, read_leaderboard

    board = read_leaderboard(path)
    labels = list(board["models"])
    cell = lambda v: "<td>-</td>" if v is None else f"<td>{v:.2f}</td>"   # noqa: E731
    head = "<tr><th>benchmark</th><th>metric</th>" + "".join(f"<th>{html.escape(m)}</th>" for m in labels) + "</tr>"
    body = "".join(f"<tr><td>{html.escape(r['benchmark'])} <span class=muted>{html.escape(r['split'])} "
                   f"({html.escape(r['size'])})</span></td><td>{html.escape(r['metric'])}</td>"
                   + "".join(cell(r["values"][m]) for m in labels) + "</tr>" for r in board["rows"])
    body += (f"<tr><td><b>average</b></td><td>{board['averaged_rows']} rows every model has</td>"
             + "".join(cell(board["average"][m]).replace("<td>", "<td><b>").replace("</td>", "</b></td>")
                       for m in labels) + "</tr>")
    sources = "".join(f"<li>{html.escape(m)}: <code>{html.escape(s)}</code></li>" for m, s in board["models"].items())
    skipped = "".join(f"<li>{html.escape(m)} skipped {html.escape(b)}: {html.escape(why)}</li>"
                      for m, reasons in board["skipped"].items() for b, why in reasons.items())
    return section(f"leaderboard-{n}" if n else "leaderboard", f"leaderboard: {board['root']}",
                   f"<table>{head}{body}</table><ul>{sources}{skipped}</ul>"
                   f'<img alt="leaderboard chart" src="{data_uri(plot_png(board), "image/png")}">')


def compare_page(paths: list[str | Path]) -> tuple[str, list[str]]:
    """The page for ``fuse report --compare PATH ...`` and the notes on paths left out."""
    from fuse.base import foreign
    from fuse.recipes.strict_yaml import read_yaml

    boards, runs, notes = sort_paths(paths)
    if not boards and len(runs) < 2:
        raise DataError(f"--compare needs two or more finished run folders or a leaderboard; got {len(runs)} run(s)"
                        + (f" ({'; '.join(notes)})" if notes else "") + ", e.g. fuse report --compare runs/a runs/b")
    sections = [leaderboard_section(b, n) for n, b in enumerate(boards)]
    if runs:
        named = {r.name if [x.name for x in runs].count(r.name) == 1 else str(r): r for r in runs}
        finals, recipes = {}, {}
        for name, r in named.items():
            results = foreign.read_json(r / "eval.json", f"--compare {r}", foreign.SMALL)
            results = results if isinstance(results, dict) else {}
            finals[name] = results.get("after") or results.get("before") or {}
            recipe = read_yaml(r / "recipe.yaml", f"--compare {r}", DataError)
            recipes[name] = recipe if isinstance(recipe, dict) else {}
        sections += [section("table", "final metrics (best epoch)", metrics_table(finals)),
                     section("recipe", "recipe fields that differ", differing_fields(recipes)),
                     section("curves", "metric curves, one line per run", overlaid_curves(named))]
    names = [b.name for b in boards] + [r.name for r in runs]
    return page("fuse report: " + ", ".join(names), sections), notes
