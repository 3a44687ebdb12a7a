"""One leaderboard: several models on the same benchmarks, a row per benchmark and metric, a column per model.

Each model is loaded, evaluated on every benchmark and released before the next one (one model in memory
at a time); the latents go through the latent store, keyed on an encoder's weights and preprocessing, so a
frozen tower two models share (two heads trained on one text encoder, a reference's tower and an export's)
encodes each value once. The average row takes the rows every model has, so a model that skipped a
benchmark is never compared on a different set of rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ConfigDict

from fuse.base.errors import DataError, FuseError
from fuse.eval.benchmarks import metric_rows, run_benchmarks

FORMAT = "fuse-leaderboard/1"
FILES = ("leaderboard.json", "leaderboard.md", "leaderboard.png")


class Row(BaseModel):
    """One benchmark metric: its value per model (None where the model did not run the benchmark)."""

    model_config = ConfigDict(extra="forbid")
    benchmark: str
    split: str
    size: str
    metric: str
    key: str
    values: dict[str, float | None]


class Leaderboard(BaseModel):
    """leaderboard.json: what ``fuse report --compare`` reads back (checked, since anyone may hand it a file)."""

    model_config = ConfigDict(extra="forbid")
    format: str
    root: str
    models: dict[str, str]                 # column label -> the MODEL argument it came from
    rows: list[Row]
    average: dict[str, float | None]
    averaged_rows: int
    skipped: dict[str, dict[str, str]]     # model label -> benchmark -> why


def model_labels(sources: list[str]) -> dict[str, str]:
    """Short column labels for MODEL arguments: a folder's name (a run's name for its ``export/``), or the
    argument itself for a model that is not a folder; the full argument where two would share a label."""
    def short(source: str) -> str:
        path = Path(source)
        if not path.is_dir():
            return source
        path = path.resolve()
        return path.parent.name if path.name == "export" else path.name

    labels = [short(s) for s in sources]
    labels = [s if labels.count(label) > 1 else label for s, label in zip(sources, labels)]
    if len(set(labels)) < len(labels):
        raise FuseError(f"MODEL is given twice ({', '.join(sorted({s for s in sources if sources.count(s) > 1}))}); "
                        "name each model once.")
    return dict(zip(labels, sources))


def run_leaderboard(sources: list[str], load: Callable, names, root: str | Path, cache_dir: str | Path, **kw) -> dict:
    """Every model of ``sources`` (loaded by ``load(source)``, one at a time) on the benchmarks ``names``
    under ``root`` (``run_benchmarks``'s options in ``kw``); returns the leaderboard as a dict."""
    labels, reports = model_labels(sources), {}
    for label, source in labels.items():
        try:
            reports[label] = run_benchmarks(load(source), names, root, cache_dir, **{**kw, "baselines": False})
        except FuseError as exc:
            raise type(exc)(f"MODEL {label}: {exc}") from None
    return leaderboard(reports, labels)


def leaderboard(reports: dict[str, dict], sources: dict[str, str]) -> dict:
    """The table of several models' ``run_benchmarks`` reports: rows in benchmark order, each model's value."""
    rows: dict[tuple[str, str], dict] = {}
    for label, report in reports.items():
        for name, result in report["benchmarks"].items():
            size = (f"{result['queries']} queries, {result['classes']} classes" if result["task"] == "zeroshot"
                    else ", ".join(f"{n} {m}" for m, n in result["items"].items()))
            for metric, key in metric_rows(name, result):
                row = rows.setdefault((name, key), {"benchmark": name, "split": result["split"], "size": size,
                                                    "metric": metric, "key": key, "values": {}})
                row["values"][label] = result["metrics"]["model"].get(key)
    for row in rows.values():
        row["values"] = {label: row["values"].get(label) for label in reports}
    common = [r for r in rows.values() if all(v is not None for v in r["values"].values())]
    average = {label: (sum(r["values"][label] for r in common) / len(common) if common else None)
               for label in reports}
    root = next(iter(reports.values()))["root"]
    return Leaderboard(format=FORMAT, root=root, models=sources, rows=list(rows.values()), average=average,
                       averaged_rows=len(common),
                       skipped={label: r["skipped"] for label, r in reports.items() if r["skipped"]}).model_dump()


def markdown(board: dict) -> str:
    """The leaderboard as one markdown table (a column per model), its average row and what was skipped."""
    labels = list(board["models"])
    cell = lambda v: "-" if v is None else f"{v:.2f}"   # noqa: E731
    lines = ["| benchmark | split | metric | " + " | ".join(labels) + " |", "|---|---|---|" + "---:|" * len(labels)]
    lines += [f"| {r['benchmark']} | {r['split']} ({r['size']}) | {r['metric']} | "
              + " | ".join(cell(r["values"][m]) for m in labels) + " |" for r in board["rows"]]
    lines.append(f"| **average** | | {board['averaged_rows']} rows every model has | "
                 + " | ".join(f"**{cell(board['average'][m])}**" for m in labels) + " |")
    skipped = [f"- {m}: skipped {name}: {why}" for m, reasons in board["skipped"].items() for name, why in reasons.items()]
    return "\n".join(lines + ([""] + skipped if skipped else []))


def plot_png(board: dict) -> bytes:
    """Grouped horizontal bars, as PNG bytes: a group per row (and the average), a bar per model, in percent."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(board["models"])
    rows = [(f"{r['benchmark']}: {r['metric']}", r["values"]) for r in board["rows"]]
    rows.append((f"average ({board['averaged_rows']} rows)", board["average"]))
    height = 1.0 / (len(labels) + 1)
    fig, ax = plt.subplots(figsize=(8, 0.16 * len(rows) * (len(labels) + 1) + 1.2))
    for j, label in enumerate(labels):
        ys = [len(rows) - 1 - i + (len(labels) / 2 - j - 0.5) * height for i in range(len(rows))]
        ax.barh(ys, [v[label] or 0.0 for _, v in rows], height=height, label=label)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows][::-1], fontsize=8)
    ax.set_xlabel("%")
    ax.set_xlim(0, 100)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def read_leaderboard(path: str | Path) -> dict:
    """A leaderboard written by ``fuse eval MODEL MODEL ... --out OUT``: OUT or its leaderboard.json."""
    import json

    from pydantic import ValidationError

    path = Path(path)
    file = path / FILES[0] if path.is_dir() else path
    try:
        board = Leaderboard.model_validate(json.loads(file.read_text(encoding="utf-8"))).model_dump()
        if board["format"] != FORMAT:
            raise ValueError(f"format {board['format']!r}, this fuse reads {FORMAT!r}")
        return board
    except (OSError, ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"{file} is not a leaderboard fuse eval wrote ({first}); give the --out folder of "
                        "`fuse eval MODEL MODEL ... --benchmark ...` or its leaderboard.json.") from None


def is_leaderboard(path: str | Path) -> bool:
    """A leaderboard's folder or file (by name; its content is checked when read)."""
    path = Path(path)
    return (path / FILES[0]).is_file() if path.is_dir() else path.name == FILES[0]
