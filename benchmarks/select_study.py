"""Does `fuse select`'s ranking mean something? Scores vs held-out R@1 after training, and curation vs random.

    fuse data build emoji
    nice python benchmarks/select_study.py select     # score the candidate pairs on the TRAIN split
    nice python benchmarks/select_study.py train      # quickstart recipe per pair x 3 seeds
    nice python benchmarks/select_study.py curate     # curated subset vs an equally sized random one, 3 seeds
    python benchmarks/select_study.py report          # Spearman rank correlations, bootstrap 95% CIs

Candidates: benchmarks/select_study_candidates.yaml (EfficientNet-Lite0 and a random-init Lite0
for images; all-MiniLM-L6-v2, all-mpnet-base-v2, MiniLM cut to 2 layers and a random-init MiniLM
for text: 8 pairs). Encoding images is the cost on a shared 2-core CPU (~1.5 images/s seen), so
the study uses seeded subsets: TRAIN_PAIRS records of the emoji train split (scored, and trained
on) and VAL_PAIRS records of its val split (R@1; split by base emoji, so disjoint from train).
Every training run uses recipes/quickstart.yaml (EPOCHS = its 30 epochs) with one evaluation at
the end, so val never picks an epoch, and linear heads (HEAD) in place of its residual MLPs.
Curation: `fuse curate` on the study's train subset vs random subsets of the same size (one per
seed), same recipe at batch size 64 (a curated subset can be smaller than a batch of 256).
Results accumulate in benchmarks/results/select_study.json; each phase skips what it already has.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "select_study.json"
CURATE_OUT = OUT.with_name("select_study_curate.json")   # its own file: the curate phase may run beside train
RUNS = Path(os.environ.get("SELECT_STUDY_RUNS", "/tmp/select-study"))
EPOCHS = int(os.environ.get("SELECT_STUDY_EPOCHS", 30))
SEEDS = (0, 1, 2)
# A second worker may train other seeds at once (each run is one slow process on a shared CPU):
#   SELECT_STUDY_SEEDS=2,1 SELECT_STUDY_WORKER=b SELECT_STUDY_RUNS=/tmp/select-study-b ... train
# It keeps its runs in its own JSON (select_study_<worker>.json); `report` merges them.
TRAIN_SEEDS = tuple(int(x) for x in os.environ.get("SELECT_STUDY_SEEDS", "0,1,2").split(","))
WORKER = os.environ.get("SELECT_STUDY_WORKER")
TRAIN_PAIRS = int(os.environ.get("SELECT_STUDY_TRAIN", 600))
VAL_PAIRS = int(os.environ.get("SELECT_STUDY_VAL", 400))
# The quickstart's residual-MLP heads took ~20 s a step on the shared CPU (load average ~19):
# the study trains linear heads instead, the same for every candidate ("quickstart" to keep them).
HEAD = os.environ.get("SELECT_STUDY_HEAD", "linear")


def load() -> dict:
    return json.loads(OUT.read_text()) if OUT.exists() else {}


def save(results: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1))


def emoji_splits() -> dict[str, Path]:
    """Seeded subsets of the emoji train and val splits (absolute image paths), written once."""
    from fuse.data.datasets import build_dataset, default_cache_root

    full = build_dataset("emoji", {"val_fraction": 0.2, "seed": 0}, default_cache_root(), where="emoji")
    out = {}
    for split, n in (("train", TRAIN_PAIRS), ("val", VAL_PAIRS)):
        path = RUNS / f"{split}-{n}.jsonl"
        if not path.exists():
            records = [line for line in full[split].read_text().splitlines() if line.strip()]
            rows = random.Random(f"{split}-0").sample(records, min(n, len(records)))
            RUNS.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(_absolute(r, full[split].parent) for r in rows) + "\n")
        out[split] = path
    return out


def phase_select(results: dict) -> None:
    from fuse.data.datasets import default_cache_root
    from fuse.select.selection import load_candidates, select

    cfg = load_candidates(ROOT / "benchmarks" / "select_study_candidates.yaml")
    start = time.perf_counter()
    report = select(cfg, emoji_splits()["train"], default_cache_root(), torch.device("cpu"))
    report["seconds"] = round(time.perf_counter() - start, 1)
    results["select"] = report
    save(results)


def train_once(modalities: dict, train: str | None, seed: int, tag: str, batch_size: int = 256) -> float:
    """Held-out (emoji val) mean R@1 of the quickstart recipe with these encoders and training pairs."""
    from fuse.recipes.plan import resolve
    from fuse.recipes.recipe import Recipe
    from fuse.training.loop import train as run

    data = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    for m, spec in modalities.items():
        data["modalities"][m]["encoder"] = spec
        if HEAD != "quickstart":
            data["modalities"][m]["head"] = {"name": HEAD}
    data["data"] = {"train": train or str(emoji_splits()["train"]), "val": str(emoji_splits()["val"]),
                    "encode_batch_size": 64}
    data.update(seed=seed, output_dir=str(RUNS / tag), device="cpu")
    data["train"].update(epochs=EPOCHS, eval_every=EPOCHS, batch_size=batch_size)
    run_dir = run(resolve(Recipe.model_validate(data)))
    metrics = json.loads((run_dir / "eval.json").read_text())["after"]
    shutil.rmtree(run_dir, ignore_errors=True)
    return metrics["mean/R@1"]


def phase_train(results: dict) -> None:
    cands = {c["label"]: c for m in results["select"]["encoders"].values() for c in m}
    own = OUT.with_name(f"select_study_{WORKER}.json") if WORKER else None
    if own is not None:
        results = json.loads(own.read_text()) if own.exists() else {"select": results["select"]}
    trained = results.setdefault("trained", {})
    rows = results["select"]["ranking"][::-1 if WORKER else 1]
    for seed in TRAIN_SEEDS:   # every pair's first seed first, so a partial study is still balanced
        for row in rows:
            a, b = row["candidates"]
            key = f"{a}+{b}"
            if str(seed) in trained.get(key, {}):
                continue
            start = time.perf_counter()
            r1 = train_once({cands[a]["modality"]: cands[a]["spec"], cands[b]["modality"]: cands[b]["spec"]},
                            None, seed, f"{key}-{seed}")
            trained.setdefault(key, {})[str(seed)] = {"R@1": r1, "seconds": round(time.perf_counter() - start, 1)}
            print(f"{key} seed {seed}: mean R@1 {r1:.4f}", flush=True)
            if own is not None:
                own.write_text(json.dumps(results, indent=1))
            else:
                save(results)


def phase_curate(_: dict) -> None:
    from fuse.cli import cli

    results = json.loads(CURATE_OUT.read_text()) if CURATE_OUT.exists() else {}
    train = emoji_splits()["train"]
    RUNS.mkdir(parents=True, exist_ok=True)
    curated = RUNS / "curated.jsonl"
    args = ["curate", str(train), "--concepts", str(ROOT / "recipes" / "emoji_concepts.txt"),
            "--out", str(curated)]
    try:
        cli.main(args, standalone_mode=False)
    except SystemExit:
        pass
    records = [line for line in train.read_text().splitlines() if line.strip()]
    kept = [line for line in curated.read_text().splitlines() if line.strip()]
    counts = json.loads(curated.with_suffix(".counts.json").read_text())
    cur = results.setdefault("curate", {"train_pairs": len(records), "curated_pairs": len(kept),
                                        "settings": counts.get("settings"), "runs": {}})
    quick = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())["modalities"]
    encoders = {m: quick[m]["encoder"] for m in ("image", "text")}
    for seed in SEEDS:
        rnd = RUNS / f"random-{seed}.jsonl"
        rnd.write_text("\n".join(random.Random(seed).sample(records, len(kept))) + "\n")
        for name, manifest in (("curated", curated), ("random", rnd)):
            if str(seed) in cur["runs"].get(name, {}):
                continue
            # a curated subset may hold fewer pairs than the quickstart's batch of 256: both arms use 64
            r1 = train_once(encoders, str(manifest), seed, f"{name}-{seed}", batch_size=64)
            cur["runs"].setdefault(name, {})[str(seed)] = r1
            print(f"curate {name} seed {seed}: mean R@1 {r1:.4f}", flush=True)
            CURATE_OUT.write_text(json.dumps(results, indent=1))


def _absolute(line: str, base: Path) -> str:
    record = json.loads(line)
    record["image"] = str((base / record["image"]).resolve())
    return json.dumps(record)


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var if var else float("nan")


def _ranks(v: list[float]) -> list[float]:
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def phase_report(results: dict) -> None:
    trained = {k: dict(v) for k, v in results.get("trained", {}).items()}
    for other in OUT.parent.glob("select_study_*.json"):   # the workers' runs
        if other != CURATE_OUT:
            for k, v in json.loads(other.read_text()).get("trained", {}).items():
                trained.setdefault(k, {}).update(v)
    results["trained_all"] = trained
    rows = [r for r in results["select"]["ranking"] if "+".join(r["candidates"]) in trained]
    r1 = {k: sum(v["R@1"] for v in s.values()) / len(s) for k, s in trained.items()}
    keys = ["+".join(r["candidates"]) for r in rows]
    table = {}
    rng = random.Random(0)
    for metric in ("linear_cka", "rbf_cka", "mutual_knn"):
        score = [r[metric] for r in rows]
        y = [r1[k] for k in keys]
        rho = spearman(score, y)
        # bootstrap over candidate pairs, and over each pair's seeds
        boots = []
        for _ in range(2000):
            idx = [rng.randrange(len(rows)) for _ in rows]
            yy = [rng.choice([v["R@1"] for v in trained[keys[i]].values()]) for i in idx]
            value = spearman([score[i] for i in idx], yy)
            if value == value:
                boots.append(value)
        boots.sort()
        table[metric] = {"spearman": rho, "ci95": [boots[int(0.025 * len(boots))], boots[int(0.975 * len(boots)) - 1]],
                         "pairs": len(rows)}
    results["correlation"] = table
    results["per_pair"] = [{"pair": k, **{m: r[m] for m in ("linear_cka", "rbf_cka", "mutual_knn")},
                            "R@1_mean": r1[k], "R@1_seeds": [v["R@1"] for v in trained[k].values()]}
                           for k, r in zip(keys, rows)]
    results["settings"] = {"epochs": EPOCHS, "head": HEAD, "train_pairs": TRAIN_PAIRS, "val_pairs": VAL_PAIRS, "seeds": SEEDS}
    save(results)
    for p in results["per_pair"]:
        print(f"{p['pair']:28s} linCKA {p['linear_cka']:.3f} rbfCKA {p['rbf_cka']:.3f} mkNN {p['mutual_knn']:.3f} "
              f"R@1 {p['R@1_mean']:.4f}")
    print(json.dumps(table, indent=1))
    print("\n| pair | linear CKA | RBF CKA | mutual kNN | held-out mean R@1 (per seed) |\n|---|---|---|---|---|")
    for p in results["per_pair"]:
        seeds = ", ".join(f"{v:.3f}" for v in p["R@1_seeds"])
        print(f"| {p['pair']} | {p['linear_cka']:.3f} | {p['rbf_cka']:.3f} | {p['mutual_knn']:.3f} | "
              f"{p['R@1_mean']:.3f} ({seeds}) |")
    print("\n| score | Spearman ρ with R@1 | bootstrap 95% CI |\n|---|---|---|")
    for metric, t in table.items():
        print(f"| {metric} | {t['spearman']:.2f} | [{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}] |")
    if CURATE_OUT.exists():
        results["curate"] = json.loads(CURATE_OUT.read_text())["curate"]
        runs = results["curate"]["runs"]
        for arm in runs:
            values = list(runs[arm].values())
            mean = sum(values) / len(values)
            sd = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
            results["curate"][f"{arm}_mean_sd"] = [mean, sd]
        save(results)
        print(json.dumps(results["curate"], indent=1))


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))
    phases = sys.argv[1:] or ["select", "train", "curate", "report"]
    for phase in phases:
        state = load()
        {"select": phase_select, "train": phase_train, "curate": phase_curate, "report": phase_report}[phase](state)
