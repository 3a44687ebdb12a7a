"""The zero-shot half of `fuse report --task zeroshot`: what a model calls each labelled item.

Predictions come from ``fuse.eval.run.zeroshot_predictions`` (the prompts, class embeddings and tie
rule of `fuse eval --task zeroshot`, so the page's top-1 is the eval's top-1). Sections: the
accuracy summary, a row-normalised confusion matrix with the most confused class pairs, per-class
accuracy worst first, sampled items with their top-5 classes (the true class marked) and the items
whose true class ranks lowest.
"""

from __future__ import annotations

import html
import io
import random
from pathlib import Path

import torch

from fuse.model.report_html import data_uri, query_block, section, thumbnail

LABELLED_MAX = 30  # classes up to which the matrix has tick labels and the page a full counts table


def zeroshot_sections(model, manifest: Path, cache: Path | None, samples: int, seed: int,
                      options: dict) -> tuple[list[str], dict]:
    """The page's zero-shot sections and headline numbers; ``options`` are ``zeroshot_inputs``'s."""
    from fuse.eval.run import zeroshot_predictions

    found = zeroshot_predictions(model, manifest, cache_dir=cache, **options)
    given, top, ranks, counts = found["inputs"], found["top"], found["ranks"], found["confusion"]
    metrics = found["metrics"]
    names = [n if n == c else f"{n} [{c}]" for n, c in zip(given.names, given.classes)]
    k = top.shape[1]
    top1, topk = metrics["top1"], metrics[f"top{k}"]

    def block(i: int) -> str:
        true = int(given.target[i])
        return query_block(thumbnail(given.values[i], given.files),
                           f"true class {html.escape(names[true])}, ranked {int(ranks[i])}",
                           [(html.escape(names[c]), c == true) for c in top[i].tolist()])

    rng = random.Random(seed)
    n = len(given.values)
    picked = sorted(rng.sample(range(n), min(samples, n)))
    worst = sorted(range(n), key=lambda i: (-int(ranks[i]), i))[:samples]
    summary = (f"<p>{n} {html.escape(given.query_modality)} items of {html.escape(str(manifest))} among "
               f"{len(names)} classes, {given.n_templates} prompt templates each: top-1 <b id=top1>{top1:.1f}%</b>, "
               f"top-{k} <b id=topk>{topk:.1f}%</b>, mean per-class top-1 {metrics['mean_per_class_top1']:.1f}%.</p>")
    sections = [
        section("zeroshot", "zero-shot classification", summary),
        section("confusion", "confusion matrix", confusion_body(counts, names)),
        section("per-class", "per-class accuracy, worst first", per_class_table(counts, ranks, given.target, names, k)),
        section("examples", "sampled items and their top classes",
                "<p>Green: the true class.</p>" + "".join(block(i) for i in picked)),
        section("failures", "items whose true class ranks lowest", "".join(block(i) for i in worst)),
    ]
    return sections, {"task": "zeroshot", "queries": n, "classes": len(names), "top1": top1, "k": k, "topk": topk,
                      "confusion": counts.tolist()}


def confusion_body(counts: torch.Tensor, names: list[str]) -> str:
    """The row-normalised matrix as a PNG, the counts as a table when the classes are few, and the most
    confused (true → predicted) pairs."""
    from fuse.eval.tables import plot_confusion

    buf = io.BytesIO()
    plot_confusion(counts.numpy(), names, buf, LABELLED_MAX)
    body = f'<img alt="confusion matrix" style="max-width:100%" src="{data_uri(buf.getvalue(), "image/png")}">'
    if len(names) <= LABELLED_MAX:
        head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"
        rows = "".join(f"<tr><td>{html.escape(names[i])}</td>" + "".join(f"<td>{int(v)}</td>" for v in row) + "</tr>"
                       for i, row in enumerate(counts.tolist()))
        body += f'<p>Counts (row: true class, column: predicted):</p><table id="confusion-counts">{head}{rows}</table>'
    off = counts.clone()
    off.fill_diagonal_(0)
    pairs = [divmod(int(f), len(names)) for f in off.flatten().argsort(descending=True, stable=True)[:10]
             if off.flatten()[f] > 0]
    totals = counts.sum(1)
    rows = "".join(f"<tr><td>{html.escape(names[t])}</td><td>{html.escape(names[p])}</td><td>{int(counts[t, p])}</td>"
                   f"<td>{100 * counts[t, p] / totals[t]:.1f}</td></tr>" for t, p in pairs)
    return body + ("<p>Most confused pairs:</p><table><tr><th>true class</th><th>predicted as</th><th>items</th>"
                   f"<th>% of the class</th></tr>{rows}</table>" if rows else "<p>No item was misclassified.</p>")


def per_class_table(counts: torch.Tensor, ranks: torch.Tensor, target: torch.Tensor, names: list[str],
                    k: int) -> str:
    """One row per class that has items: items, top-1 and top-k accuracy, what it is most often taken for."""
    rows = []
    for c, name in enumerate(names):
        mine = ranks[target == c]
        if not mine.numel():
            continue
        wrong = counts[c].clone()
        wrong[c] = 0
        taken = html.escape(names[int(wrong.argmax())]) if wrong.sum() else "-"
        rows.append((float((mine == 1).double().mean() * 100), name, mine.numel(),
                     float((mine <= k).double().mean() * 100), taken))
    rows.sort(key=lambda r: (r[0], r[1]))
    body = "".join(f"<tr><td>{html.escape(name)}</td><td>{n}</td><td>{a1:.1f}</td><td>{ak:.1f}</td><td>{taken}</td></tr>"
                   for a1, name, n, ak, taken in rows)
    return (f'<div style="max-height:420px;overflow:auto"><table id="per-class-table"><tr><th>class</th><th>items</th>'
            f"<th>top-1 %</th><th>top-{k} %</th><th>most often predicted as</th></tr>{body}</table></div>")
