"""Approximate search (faiss IVF-PQ and HNSW beside the exact index): recall against exact search,
updates that follow added and removed items (removal compacts), memory-mapped loading, and one line
for each bad input."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import fuse
from fuse.base.atomic import save_tensors, write_text
from fuse.base.errors import FuseError, ModelFileError
from fuse.base.weights import tensors_hash
from fuse.cli import cli
from fuse.model.ann_build import update_ann
from fuse.model.index import FORMAT, FORMAT_VERSION, META, open_index

faiss = pytest.importorskip("faiss")  # the test extra installs it
N, DIM, K = 3000, 32, 10


def clustered(seed: int, rows: int) -> torch.Tensor:
    """Unit vectors around 30 random centres (fixed by seed 0), each spread in all directions."""
    centres = torch.nn.functional.normalize(torch.randn(30, DIM, generator=torch.Generator().manual_seed(0)), dim=-1)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.nn.functional.normalize(torch.randn(rows, DIM, generator=gen), dim=-1)
    return torch.nn.functional.normalize(centres[torch.randint(30, (rows,), generator=gen)] + 0.8 * noise, dim=-1)


@pytest.fixture(autouse=True)
def one_faiss_thread():
    """faiss's OpenMP threads spin against the other processes of a busy machine (5x slower here)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def write_shards(folder, shards: list[torch.Tensor], first: int = 0) -> None:
    """index.json and shards as ``update_index`` writes them (values item-<shard>-<row>)."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": {"fingerprint": "f", "path": "m"},
            "modality": "image", "input": "image", "embed_dim": DIM, "next_shard": first + len(shards),
            "shards": {}, "items": []}
    for s, emb in enumerate(shards, first):
        name = f"shard-{s:05d}.safetensors"
        save_tensors({"embeddings": emb}, folder / name)
        meta["shards"][name] = {"rows": len(emb), "sha256": tensors_hash({"embeddings": emb})}
        meta["items"] += [[f"item-{s}-{r}", f"item-{s}-{r}", name, r] for r in range(len(emb))]
    write_text(folder / META, json.dumps(meta))


def answers(folder, kind: str, queries: torch.Tensor, **knobs) -> list[list[str]]:
    index = open_index(folder)
    index.kind = kind
    return [[h["value"] for h in row] for row in index.search(queries, K, **knobs)]


def recall(got: list[list[str]], exact: list[list[str]]) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, exact)]))


@pytest.fixture
def synthetic(tmp_path):
    folder = tmp_path / "ix"
    folder.mkdir()
    data = clustered(1, N)
    write_shards(folder, list(data.split(1000)))
    return folder, clustered(2, 64)


@pytest.mark.parametrize("kind, floor", [("ivfpq", 0.9), ("hnsw", 0.95)])
def test_recall_against_exact_search(synthetic, kind, floor):
    folder, queries = synthetic
    assert update_ann(folder, kind) == kind
    exact = answers(folder, "exact", queries)
    got = answers(folder, kind, queries)
    assert recall(got, exact) >= floor, recall(got, exact)
    knobs = [{"nprobe": 1}, {"rerank": 1}] if kind == "ivfpq" else [{"ef_search": 1}]
    for knob in knobs:  # each knob reaches the search
        assert recall(answers(folder, kind, queries, **knob), exact) < recall(got, exact), knob
    best = open_index(folder).search(queries[:1], 3)[0]
    top = clustered(1, N) @ queries[0]
    assert best[0]["score"] == pytest.approx(float(top.max()), abs=1e-5)  # scores are the exact cosines


def test_ivfpq_is_memory_mapped_and_holds_codes_not_vectors(synthetic):
    folder, queries = synthetic
    update_ann(folder, "ivfpq")
    ann = json.loads((folder / "ann.json").read_text())
    opened = open_index(folder).ann
    lists = faiss.downcast_InvertedLists(opened.index.invlists)
    assert not isinstance(lists, faiss.ArrayInvertedLists)  # read with IO_FLAG_MMAP: the lists stay in the file
    assert opened.index.ntotal == N
    assert (folder / ann["file"]).stat().st_size < N * DIM * 4 / 4  # m bytes + an id per item, not 4 * DIM


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_added_and_removed_shards_are_followed(synthetic, kind):
    """update_index only ever adds shards or drops them (removal compacts partly used ones into new shards)."""
    folder, queries = synthetic
    update_ann(folder, kind)
    first = json.loads((folder / "ann.json").read_text())["file"]
    data = clustered(1, N)
    added = queries[:5] * 1.0  # new items identical to queries: each must come back first
    write_shards(folder, [*data.split(1000), added])
    assert update_ann(folder, kind) == kind
    top = [row[0] for row in answers(folder, kind, queries[:5])]
    assert top == [f"item-3-{r}" for r in range(5)]
    ann = json.loads((folder / "ann.json").read_text())
    assert ann["file"] != first and not (folder / first).exists()  # one generation kept
    size = (folder / ann["file"]).stat().st_size
    for name in ["shard-00000.safetensors", "shard-00003.safetensors"]:
        (folder / name).unlink()
    write_shards(folder, list(data.split(1000))[1:], first=1)  # shard 0 and the added items removed
    update_ann(folder, kind)
    index = open_index(folder)
    assert index.ann.index.ntotal == N - 1000
    hits = {h["value"] for row in index.search(queries, 50) for h in row}
    assert hits and not any(v.startswith(("item-0-", "item-3-")) for v in hits)
    assert (folder / json.loads((folder / "ann.json").read_text())["file"]).stat().st_size < size


def test_auto_keeps_the_kind_it_has_and_exact_stays_the_default_for_small_sets(synthetic):
    folder, queries = synthetic
    assert update_ann(folder, "auto") == "exact" and not (folder / "ann.json").exists()
    assert update_ann(folder, "hnsw") == "hnsw"
    assert update_ann(folder, "auto") == "hnsw"
    assert update_ann(folder, "exact") == "hnsw"  # kept up to date; exact search is still asked for
    assert update_ann(folder, "exact", rebuild=True) == "exact" and not list(folder.glob("ann*"))
    with pytest.raises(FuseError, match="Unknown --index-kind 'flat'"):
        update_ann(folder, "flat")


def test_an_index_built_for_another_model_or_dimension_is_one_line(synthetic):
    folder, queries = synthetic
    update_ann(folder, "ivfpq")
    ann = json.loads((folder / "ann.json").read_text())
    write_text(folder / "ann.json", json.dumps({**ann, "model": {"fingerprint": "g", "path": "other/export"}}))
    with pytest.raises(ModelFileError, match=r"was built for model other/export \(32-d\), not for the 32-d model m"):
        open_index(folder).search(queries, K)
    with pytest.raises(ModelFileError, match="delete ann.json"):
        update_ann(folder, "ivfpq")
    write_text(folder / "ann.json", json.dumps({**ann, "embed_dim": 64}))
    with pytest.raises(ModelFileError, match=r"\(64-d\), not for the 32-d model"):
        update_ann(folder, "auto")
    assert update_ann(folder, "ivfpq", rebuild=True) == "ivfpq"
    ann = json.loads((folder / "ann.json").read_text())
    (folder / ann["file"]).write_bytes(b"not a faiss index")
    with pytest.raises(ModelFileError, match=f"Approximate index .*{ann['file']} is unreadable"):
        open_index(folder).search(queries, K)
    write_shards(folder, [*clustered(1, N).split(1000), queries])  # items added: the update reads it
    with pytest.raises(ModelFileError, match="is unreadable"):
        update_ann(folder, "ivfpq")
    assert update_ann(folder, "ivfpq", rebuild=True) == "ivfpq"
    with pytest.raises(ModelFileError, match="holds 32-d embeddings but the queries are 8-d"):
        open_index(folder).search(torch.randn(2, 8), K)


# --- through `fuse search` with a trained tiny export ---

def search(*args):
    return CliRunner().invoke(cli, ["search", *map(str, args)])


@pytest.fixture
def photos(shapes_data, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(shapes_data["val"].parent / "img", folder)
    return folder


def values(result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [h["value"] for h in json.loads(result.stdout)[0]["results"]]


def test_fuse_search_approximate_follows_removal_and_compacts(trained_shapes_export, photos):
    export, n, kind = trained_shapes_export, len(list(photos.glob("*.png"))), "ivfpq"
    exact = values(search(export, "--index", photos, "-q", "a red circle", "--k", n, "--json", "--no-cache",
                          "--index-kind", "exact"))
    folder = photos / ".fuse-index" / "image"
    shard = next(folder.glob("shard-*.safetensors"))
    before = shard.stat().st_size
    assert not (folder / "ann.json").exists()
    got = values(search(export, "--index", photos, "-q", "a red circle", "--k", n, "--json", "--no-cache",
                        "--index-kind", kind, "--nprobe", 4, "--ef-search", 16, "--rerank", 3))
    assert got == exact  # a small set: every item is a candidate, rescored exactly
    ann = json.loads((folder / "ann.json").read_text())
    assert ann["kind"] == kind and ann["items"] == n
    gone = sorted(photos.glob("*.png"))[:3]
    for p in gone:
        p.unlink()
    got = values(search(export, "--index", photos, "-q", "a red circle", "--k", n, "--json", "--no-cache"))
    assert not {str(p.resolve()) for p in gone} & set(got) and len(got) == n - 3
    assert got == [v for v in exact if v not in {str(p.resolve()) for p in gone}]
    assert not shard.exists()  # the partly used shard was rewritten with its remaining rows
    shards = list(folder.glob("shard-*.safetensors"))
    assert len(shards) == 1 and shards[0].stat().st_size < before
    assert json.loads((folder / "ann.json").read_text())["items"] == n - 3
    table = search(export, "--index", photos, "-q", "a red circle", "--k", 2, "--no-cache").output
    assert "rank   score  item" in table
    model = fuse.load(export)  # the Python API: the same index, the same answer
    assert [h["value"] for h in model.search("a red circle", photos, k=n, index_kind=kind)[0]] == got


def test_missing_faiss_is_one_line_and_writes_nothing(trained_shapes_export, photos, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError
    result = search(trained_shapes_export, "--index", photos, "-q", "a red circle", "--no-cache", "--index-kind", "hnsw")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--index-kind hnsw needs faiss" in result.output and "pip install 'fuse-align[faiss]'" in result.output
    assert not (photos / ".fuse-index").exists()
    # auto falls back to exact search without faiss
    assert search(trained_shapes_export, "--index", photos, "-q", "a red circle", "--no-cache").exit_code == 0
