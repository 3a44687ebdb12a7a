"""How often `fuse search` finds the named emoji: the quickstart export, its val images indexed,
every val caption as a query, through the CLI exactly as a user runs it.

    python benchmarks/search_quickstart.py EXPORT VAL_MANIFEST [INDEX_DIR]

Prints top-1/5/10 rates and the time to build the index (first search) and to answer all
queries against the built index (second search); writes benchmarks/results/search_quickstart.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, context, machine  # noqa: E402


def run_search(export, manifest, index_dir, captions, k):
    args = [sys.executable, "-m", "fuse", "search", str(export), "--index", str(manifest), "--modality", "image",
            "--index-dir", str(index_dir), "--json", "--k", str(k), "--no-cache"]
    for c in captions:
        args += ["-q", c]
    t = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return json.loads(out), time.perf_counter() - t


def main(export: str, manifest: str, index_dir: str | None = None) -> dict:
    manifest = Path(manifest)
    records = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    captions = [r["text"] for r in records]
    index_dir = Path(index_dir or tempfile.mkdtemp(prefix="fuse-search-qs-")) / "index"
    first, t_build = run_search(export, manifest, index_dir, captions[:1], 10)
    answers, t_query = run_search(export, manifest, index_dir, captions, 10)
    rates = {}
    for k in (1, 5, 10):
        found = sum(str((manifest.parent / r["image"]).resolve()) in {h["value"] for h in a["results"][:k]}
                    for r, a in zip(records, answers))
        rates[f"top{k}"] = round(100 * found / len(records), 2)
    n_images = len({r["image"] for r in records})
    out = {"export": str(export), "manifest": str(manifest), "queries": len(records), "images": n_images, **rates,
           "first_search_with_index_build_s": round(t_build, 1), "search_all_queries_s": round(t_query, 1),
           "machine": machine()}
    print(f"{len(records)} val captions vs {n_images} val images: named emoji at rank 1 {rates['top1']}%, "
          f"top 5 {rates['top5']}%, top 10 {rates['top10']}%; first search (builds the index) {t_build:.0f} s, "
          f"all {len(records)} queries on the built index {t_query:.0f} s {context()}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "search_quickstart.json").write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main(*sys.argv[1:4])
