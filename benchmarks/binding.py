"""Binding through a hub: does a 3-tower model retrieve between two towers it never trained together?

    python benchmarks/binding.py --seeds 0 1 2 --out /tmp/binding

On the shipped spoken emoji (speech, image and name of each emoji), three runs per seed:
  * bound:     recipes/audio_image_text.yaml: audio-text pairs from one half of the training
               emoji (train-a), image-text pairs from the other half (train-b); no item is ever
               seen as audio and image together.
  * direct:    an audio-image model trained on audio-image pairs of the same training emoji, as
               many pairs as the bound model sees (all clips of train-a, one clip of each train-b
               item) and the same pair-samples per run (batch 512, the bound run's step count).
  * untrained: the bound model's encoders with fresh heads (its "before" numbers).
All three are evaluated on the same held-out emoji (val, split by base emoji): audio->image and
image->audio recall@K. Prints a markdown table (mean +- std over seeds) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "audio_image_text.yaml"
KEYS = ("audio_to_image/R@1", "image_to_audio/R@1", "audio_to_image/R@5", "image_to_audio/R@5",
        "audio_to_image/R@10", "image_to_audio/R@10")


def direct_manifest(dataset_dir: Path, out: Path) -> tuple[Path, int]:
    """Audio-image records: every clip of train-a items, the first clip of each train-b item."""
    rows = []
    for split, clips in (("train-a", None), ("train-b", 1)):
        for line in (dataset_dir / f"{split}.jsonl").read_text().splitlines():
            r = json.loads(line)
            for clip in r["audio"][:clips]:
                rows.append({"id": r["id"], "audio": str(dataset_dir / clip), "image": str(dataset_dir / r["image"])})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out, len(rows)


def main() -> None:
    import fuse
    from fuse.data.datasets import build_dataset, default_cache_root
    from fuse.recipes.recipe import load_recipe

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("/tmp/binding"))
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.cache_dir or str(default_cache_root())
    base = load_recipe(RECIPE, [f"data.cache_dir={cache}"])
    splits = build_dataset(base.data.dataset.name, base.data.dataset.options, Path(cache))
    dataset_dir = splits["val"].parent
    manifest, n_direct = direct_manifest(dataset_dir, args.out / "direct-train.jsonl")

    def trained(run_dir: Path, start) -> Path:
        """A finished run is reused (the benchmark resumes where it stopped)."""
        return run_dir if (run_dir / "eval.json").exists() else start()

    results: dict[str, list[dict]] = {"untrained": [], "bound": [], "direct": []}
    for seed in args.seeds:
        run = trained(args.out / f"bound-{seed}", lambda: fuse.train(
            RECIPE, [f"seed={seed}", f"output_dir={args.out}/bound-{seed}", f"data.cache_dir={cache}"]))
        bound = json.loads((run / "eval.json").read_text())
        results["bound"].append(bound["after"])
        results["untrained"].append(bound["before"])
        steps = max(json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines())
        recipe = yaml.safe_load(RECIPE.read_text())
        recipe.update(name="direct_audio_image", seed=seed, output_dir=str(args.out / f"direct-{seed}"))
        recipe["modalities"].pop("text")
        recipe["objectives"] = [{"name": "infonce", "pair": ["audio", "image"]}]
        recipe["data"] = {"train": str(manifest), "val": str(splits["val"]), "cache_dir": cache,
                          "encode_batch_size": 32}
        recipe["train"] = {**recipe["train"], "batch_size": 512, "max_steps": steps}
        recipe.pop("eval")
        path = args.out / f"direct-{seed}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        direct = json.loads((trained(args.out / f"direct-{seed}", lambda: fuse.train(path)) / "eval.json").read_text())
        results["direct"].append(direct["after"])

    table = ["| model (held-out audio<->image, %) | " + " | ".join(KEYS) + " |", "|---|" + "---|" * len(KEYS)]
    for name, rows in results.items():
        cells = []
        for k in KEYS:
            values = [r[k] for r in rows]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} ± {std:.2f}")
        table.append(f"| {name} | " + " | ".join(cells) + " |")
    print(f"direct model: {n_direct} audio-image training pairs; seeds {args.seeds}")
    print("\n".join(table))
    (args.out / "binding.json").write_text(json.dumps({"seeds": args.seeds, "direct_pairs": n_direct,
                                                       "results": results}, indent=2))


if __name__ == "__main__":
    main()
