"""An embedding index: one modality's values embedded once by one model, kept up to date, searched exactly.

    INDEX/index.json                 format, the model's fingerprint, modality, and every item:
                                     [value, identity, shard, row] (identity: path|size|mtime, or the text)
    INDEX/shard-NNNNN.safetensors    embeddings [rows, D], one file per batch of added items
    INDEX/ann.json, ann-*.faiss      an approximate index of the same shards, when one is kept (fuse.model.ann)

By default INDEX is ``<folder>/.fuse-index/<modality>`` (or ``<manifest dir>/.fuse-index/<manifest
stem>-<modality>``). Updating embeds only values whose identity is new or changed and drops values
that are gone; index.json is rewritten (atomically) after every shard, so an interrupted build
resumes where it stopped. Removal compacts: a shard some of whose items are gone is rewritten as a
new shard of the rest, so no removed item's bytes stay, and a shard never changes once written.
An index records the fingerprint of the model that built it: another model's index is refused
(``rebuild=True`` starts it over) rather than searched with the wrong space. Nothing is unpickled:
index.json is JSON and shards are safetensors, checked against their recorded hashes. Exact search
goes through the same tiled top-k kernel as evaluation; approximate search (IVF-PQ, HNSW) through
faiss, see fuse.model.ann.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from fuse.base.atomic import locked, save_tensors, write_text
from fuse.base.errors import ModelFileError
from fuse.base.inputs import input_kind
from fuse.base.owned import claim, sweep_temporaries
from fuse.base.weights import tensors_hash
from fuse.eval.rank import topk

FORMAT = "fuse-embedding-index"
FORMAT_VERSION = 1
INDEX_DIR = ".fuse-index"
META = "index.json"
SHARD_ROWS = 8192


@dataclass(frozen=True)
class IndexOptions:
    """How an index is built or updated; the defaults of `fuse search`, ``model.index`` and ``model.search``.

    ``rebuild``: start over (e.g. the index was built by another model). ``cache_dir``: the latent store
    that manifest values' latents are read from and written to (None: not used). ``batch_size``: the
    encoding batch. ``progress``: show progress bars. ``model_path``: recorded in index.json (which model
    built it; empty: the model's own ``path``). ``shard_rows``: items per shard file. ``fingerprint``:
    the model's fingerprint when the caller has it already. ``desc``: the progress bar's verb.
    ``kind``: exact, ivfpq, hnsw or auto (fuse.model.ann.choose_kind). ``nprobe`` (IVF lists scanned) and
    ``ef_search`` (HNSW candidate list), ``rerank`` (IVF-PQ candidates per result rescored exactly):
    search-time knobs, None for the defaults.
    """

    rebuild: bool = False
    cache_dir: Path | None = None
    batch_size: int = 32
    progress: bool = True
    model_path: str = ""
    shard_rows: int = SHARD_ROWS
    fingerprint: str | None = None
    desc: str = "indexing"
    kind: str = "auto"
    nprobe: int | None = None
    ef_search: int | None = None
    rerank: int | None = None

    def for_model(self, model) -> "IndexOptions":
        """These options with ``model_path`` filled in from the model when it is empty."""
        return self if self.model_path else replace(self, model_path=str(getattr(model, "path", "")))


def default_location(source: Path, modality: str) -> Path:
    """Where an index of ``source`` (a folder or a manifest file) lives unless the user names a folder."""
    source = Path(source)
    if source.is_dir():
        return source / INDEX_DIR / modality
    parts = source.parts
    wild = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), None)
    if wild is not None:  # a glob: beside its fixed part, named by a hash of the pattern
        import hashlib

        tag = hashlib.sha256(str(source).encode()).hexdigest()[:8]
        return Path(*parts[:wild]) / INDEX_DIR / f"glob-{tag}-{modality}"
    return source.parent / INDEX_DIR / f"{source.stem}-{modality}"


@dataclass
class EmbeddingIndex:
    """An index on disk: its folder, its metadata, and (loaded on first use) its embeddings or its
    approximate index. ``kind``: "exact" searches exactly even when an approximate index is kept."""

    folder: Path
    meta: dict
    _embeddings: torch.Tensor | None = field(default=None, repr=False)
    kind: str = "auto"
    _ann: object = field(default=None, repr=False)

    @property
    def values(self) -> list[str]:
        """The indexed values (absolute paths or text), in the order of ``embeddings``."""
        return [item[0] for item in self.meta["items"]]

    @property
    def modality(self) -> str:
        return self.meta["modality"]

    def __len__(self) -> int:
        return len(self.meta["items"])

    @property
    def embeddings(self) -> torch.Tensor:
        """[N, D] float32 on the CPU, read from the shards, each checked against its recorded hash."""
        if self._embeddings is None:
            self._embeddings = read_embeddings(self.folder, self.meta)
        return self._embeddings

    @property
    def ann(self):
        """The approximate index kept in the folder (a fuse.model.ann.AnnIndex), or None: none, or kind exact."""
        if self._ann is None and self.kind != "exact":
            from fuse.model.ann import open_ann

            self._ann = open_ann(self.folder, self.meta) or False
        return self._ann or None

    def search(self, query: torch.Tensor, k: int = 10, *, nprobe: int | None = None, ef_search: int | None = None,
               rerank: int | None = None) -> list[list[dict]]:
        """For each query embedding, its ``k`` nearest items, best first: {rank, score, value}. Exact, or
        through the approximate index when there is one (``nprobe``/``ef_search``/``rerank``: its knobs)."""
        dim = self.meta["embed_dim"]
        if query.shape[-1] != dim:
            raise ModelFileError(f"Index {self.folder} holds {dim}-d embeddings but the queries are "
                                 f"{query.shape[-1]}-d; rebuild it with this model (--rebuild).")
        if self.ann is not None:
            scores, index = self.ann.search(query.float().cpu().numpy(), k, nprobe, ef_search, rerank)
        else:
            scores, index = topk(query.float().cpu(), self.embeddings, k)
            scores, index = scores.numpy(), index.numpy()
        items = self.meta["items"]
        return [[{"rank": r + 1, "score": float(s), "value": items[i][0]}
                 for r, (s, i) in enumerate(zip(srow.tolist(), irow.tolist())) if i >= 0]
                for srow, irow in zip(scores, index)]


def corrupt(folder: Path, what: str) -> ModelFileError:
    return ModelFileError(f"Index {folder} is corrupt ({what}); rebuild it: run again with --rebuild "
                          "(Python: rebuild=True), or delete the folder.")


def read_meta(folder: Path) -> dict | None:
    """index.json, checked; None when there is no index yet."""
    file = folder / META
    if not file.exists():
        return None
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise corrupt(folder, f"{META} is unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise corrupt(folder, f"{META} is not a {FORMAT} file")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(f"Index {folder} was written by a newer fuse; upgrade fuse-align, or --rebuild it.")
    if not isinstance(meta.get("items"), list) or not isinstance(meta.get("shards"), dict):
        raise corrupt(folder, f"{META} lacks its items or shards")
    return meta


def read_embeddings(folder: Path, meta: dict) -> torch.Tensor:
    """Every item's embedding, in item order, from the shards (each verified by its sha256)."""
    n, dim = len(meta["items"]), meta["embed_dim"]
    out = torch.empty(n, dim)
    by_shard: dict[str, tuple[list[int], list[int]]] = {}
    for pos, (_, _, shard, row) in enumerate(meta["items"]):
        by_shard.setdefault(shard, ([], []))
        by_shard[shard][0].append(pos)
        by_shard[shard][1].append(row)
    for shard, (positions, rows) in by_shard.items():
        entry = meta["shards"].get(shard)
        if entry is None:
            raise corrupt(folder, f"items point into {shard}, which {META} does not list")
        emb = load_shard(folder, shard, entry)
        if emb.shape[1] != dim or max(rows) >= emb.shape[0]:
            raise corrupt(folder, f"{shard} has shape {list(emb.shape)}")
        out[torch.tensor(positions)] = emb[torch.tensor(rows)]
    return out


def load_shard(folder: Path, shard: str, entry: dict) -> torch.Tensor:
    """One shard's embeddings [rows, D] as float32, checked against its recorded sha256."""
    try:
        tensors = load_file(str(folder / shard))
    except FileNotFoundError:
        raise corrupt(folder, f"{shard} is missing") from None
    except Exception as exc:
        raise corrupt(folder, f"{shard} is unreadable: {str(exc).splitlines()[0]}") from None
    if tensors_hash(tensors) != entry["sha256"]:
        raise corrupt(folder, f"{shard} does not match its recorded hash")
    return tensors["embeddings"].float()


def compact(folder: Path, shards: dict, done: dict, next_shard: int) -> int:
    """Rewrite each partly used shard (some of its items removed) as a new shard of its remaining rows,
    in ``shards`` and ``done`` (the caller records them, then deletes the old files); returns the next
    shard number. Removed items' bytes do not stay, and a written shard never changes."""
    users: dict[str, list[str]] = {}
    for value, item in done.items():
        users.setdefault(item[2], []).append(value)
    for shard, values in sorted(users.items()):
        if len(values) == shards[shard]["rows"]:
            continue
        values.sort(key=lambda v: done[v][3])
        emb = load_shard(folder, shard, shards[shard])[[done[v][3] for v in values]].contiguous()
        name = f"shard-{next_shard:05d}.safetensors"
        save_tensors({"embeddings": emb}, folder / name)
        shards[name] = {"rows": len(values), "sha256": tensors_hash({"embeddings": emb})}
        next_shard += 1
        done.update({v: [v, done[v][1], name, row] for row, v in enumerate(values)})
    return next_shard


def refuse_other_model(folder: Path, meta: dict, fingerprint: str, modality: str) -> None:
    built = meta.get("model", {})
    if built.get("fingerprint") != fingerprint:
        raise ModelFileError(f"Index {folder} was built by another model ({built.get('path', 'unknown')}); its "
                             "embeddings are in another space. Rebuild it for this model with --rebuild (Python: "
                             "rebuild=True), or give another --index-dir.")
    if meta.get("modality") != modality:
        raise ModelFileError(f"Index {folder} holds {meta.get('modality')} embeddings, not {modality}; rebuild it "
                             "with --rebuild or give another --index-dir.")


def fuse_index_files(folder: Path) -> bool:
    """An index fuse wrote before it marked its folders: a valid index.json beside its shards only."""
    try:
        meta = read_meta(folder)
    except ModelFileError:
        return False
    return meta is not None and all(p.name == META or p.name.startswith((".", "shard-")) for p in folder.iterdir())


def claim_index(folder: Path) -> set[str]:
    """Make ``folder`` this index's (``fuse.base.owned``): a non-empty folder that is not a fuse index
    is refused, --rebuild or not; its own stale temporaries are swept. Returns the shards it may
    delete: those its index.json lists (fuse wrote them)."""
    claim(folder, "index", "--index-dir", legacy=fuse_index_files)
    sweep_temporaries(folder)
    try:
        meta = read_meta(folder)
    except ModelFileError:
        return set()
    return set(meta["shards"]) if meta else set()


def update_index(model, modality: str, values: list[str], folder: Path,
                 options: IndexOptions = IndexOptions()) -> EmbeddingIndex:
    """Bring the index in ``folder`` up to date with ``values`` (in that order) and return it.

    Only values whose identity (file path, size and mtime; or the text) is new are embedded,
    ``options.shard_rows`` at a time; each finished shard is recorded at once, so a killed update resumes."""
    from tqdm.auto import tqdm

    from fuse.model.embed import embed_values, model_fingerprint

    folder = Path(folder)
    model.encoder(modality)  # an unknown modality names the towers there are
    values = list(dict.fromkeys(values))
    kind = input_kind(model.input_kind(modality))
    rebuild, progress, shard_rows = options.rebuild, options.progress, options.shard_rows
    fingerprint = options.fingerprint or model_fingerprint(model)
    with locked(folder):
        ours = claim_index(folder)
        meta = None
        try:
            meta = read_meta(folder)
            if meta is not None:
                refuse_other_model(folder, meta, fingerprint, modality)
        except ModelFileError:
            if not rebuild:
                raise
            meta = None
        if rebuild:
            meta = None
        old = {} if meta is None else {item[0]: item for item in meta["items"]}
        shards = {} if meta is None else dict(meta["shards"])
        next_shard = 0 if meta is None else meta.get("next_shard", len(shards))
        identities = [kind.identity(v) for v in values]
        done = {v: old[v] for v, ident in zip(values, identities) if v in old and old[v][1] == ident}
        todo = [(v, ident) for v, ident in zip(values, identities) if v not in done]
        base = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": {"fingerprint": fingerprint,
                "path": str(options.model_path)}, "modality": modality, "input": kind.name, "embed_dim": model.embed_dim}

        def save(previous: dict | None = None) -> dict:
            live = {item[2] for item in done.values()}
            meta = {**base, "next_shard": next_shard, "shards": {s: e for s, e in shards.items() if s in live},
                    "items": [done[v] for v in values if v in done]}
            if meta != previous:  # an index that is up to date is not written again
                write_text(folder / META, json.dumps(meta))
            return meta

        meta = save(meta)  # removed values are dropped even when nothing is new
        bar = tqdm(total=len(todo), desc=f"{options.desc} {modality}", unit="item", disable=not progress or not todo)
        for start in range(0, len(todo), shard_rows):
            chunk = todo[start:start + shard_rows]
            emb = embed_values(model, modality, [v for v, _ in chunk], options.batch_size, options.cache_dir,
                               progress=progress)
            name = f"shard-{next_shard:05d}.safetensors"
            save_tensors({"embeddings": emb.contiguous()}, folder / name)
            shards[name] = {"rows": len(chunk), "sha256": tensors_hash({"embeddings": emb.contiguous()})}
            next_shard += 1
            done.update({v: [v, ident, name, row] for row, (v, ident) in enumerate(chunk)})
            meta = save()
            bar.update(len(chunk))
        bar.close()
        next_shard = compact(folder, shards, done, next_shard)
        meta = save(meta)
        for stale in ours - set(meta["shards"]):  # shards it wrote that no item points into any more
            (folder / stale).unlink(missing_ok=True)
    return EmbeddingIndex(folder, meta)


def open_index(folder: Path) -> EmbeddingIndex:
    """An existing index, read as it is (no update)."""
    meta = read_meta(Path(folder))
    if meta is None:
        raise ModelFileError(f"No index in {folder} ({META} missing); build one with fuse search or model.search().")
    return EmbeddingIndex(Path(folder), meta)
