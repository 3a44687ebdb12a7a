"""Search: which modality the index and the queries are, what to index, and the answer table.

Used by `fuse search` and by ``model.search(...)``: the index (``fuse.model.index``) is built or
updated first (and its approximate index, if one is kept: ``fuse.model.ann``), then the queries
are embedded by their own tower and ranked, exactly or through the approximate index.
"""

from __future__ import annotations

from pathlib import Path

from fuse.base.errors import DataError, FuseError
from fuse.base.inputs import input_kind
from fuse.model.ann import check_kind
from fuse.model.ann_build import update_ann
from fuse.model.collect import collect_inputs, manifest_values
from fuse.model.embed import embed_values
from fuse.model.index import EmbeddingIndex, IndexOptions, default_location, update_index


def is_manifest(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".jsonl"


def pick(choices: list[str], what: str, option: str, model) -> str:
    if len(choices) == 1:
        return choices[0]
    raise FuseError(f"Cannot tell the {what}: this model has towers {', '.join(model.modalities)}"
                    f"{f' and {len(choices)} fit' if choices else ', none fits'}; name it with {option}.")


def pick_query_modality(model, queries: list, given: str | None = None) -> str:
    """The tower that embeds the queries: ``given``, or the one tower whose input kind fits them
    (a file the kind reads, or a string for an inline kind such as text)."""
    if given:
        model.encoder(given)
        return given
    fits = []
    for m in model.modalities:
        kind = input_kind(model.input_kind(m))
        if all(isinstance(q, str) for q in queries):
            if all((Path(q).is_file() and kind.accepts(q)) if kind.files else not Path(q).is_file() for q in queries):
                fits.append(m)
    return pick(fits, "query modality", "--query-modality (query_modality=)", model)


def index_modality(model, source: Path, query_mod: str, given: str | None = None) -> str:
    """The tower whose values are indexed: ``given``, a manifest's field, or the file tower that is not the query's."""
    if given:
        model.encoder(given)
        return given
    if is_manifest(source):
        import json

        first = next((line for line in source.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()), "{}")
        try:
            fields = set(json.loads(first)) if first.startswith("{") else set()
        except ValueError:
            fields = set()
        fits = [m for m in model.modalities if m in fields and m != query_mod] or \
               [m for m in model.modalities if m in fields]
    else:
        fits = [m for m in model.modalities if input_kind(model.input_kind(m)).files and m != query_mod] or \
               [m for m in model.modalities if input_kind(model.input_kind(m)).files]
    return pick(fits, "modality to index", "--modality (modality=)", model)


def source_values(model, source: Path, modality: str) -> list[str]:
    """What to index: a manifest's values of ``modality``, or the files of a folder (or glob)."""
    if is_manifest(source):
        return manifest_values(source, modality, model.input_kind(modality))
    if not source.exists() and not any(c in str(source) for c in "*?["):
        raise DataError(f"Index source not found: {source}. Give a folder of files or a .jsonl manifest.")
    return collect_inputs(model.input_kind(modality), [str(source)])


def build_index(model, source, modality: str | None = None, index_dir=None, query_mod: str | None = None,
                options: IndexOptions = IndexOptions()) -> EmbeddingIndex:
    """Build or update the index of ``source`` (a folder, glob or .jsonl manifest) for this model:
    ``modality`` (default: inferred, not ``query_mod``'s) in ``index_dir`` (default: beside the source),
    and the approximate index ``options.kind`` asks for (or the one it has) from its shards."""
    check_kind(options.kind)
    source = Path(source).expanduser()
    modality = index_modality(model, source, query_mod or "", modality)
    folder = Path(index_dir) if index_dir else default_location(source, modality)
    values = source_values(model, source, modality)
    index = update_index(model, modality, values, folder, options)
    kept = update_ann(folder, options.kind, options.rebuild)  # the approximate index follows the shards
    index.kind = "exact" if options.kind == "exact" else kept
    return index


def search(model, queries: list, index, k: int = 10, *, query_modality: str | None = None,
           modality: str | None = None, index_dir=None, options: IndexOptions = IndexOptions()) -> list[list[dict]]:
    """Each query's ``k`` best items of ``index`` (an EmbeddingIndex, or a folder/manifest to index
    first, see ``build_index``; ``options.kind`` picks exact or approximate search): lists of
    {rank, score, value}, best first."""
    if isinstance(queries, str):
        queries = [queries]
    if not queries:
        raise DataError("No queries given.")
    qm = pick_query_modality(model, list(queries), query_modality)
    if not isinstance(index, EmbeddingIndex):
        index = build_index(model, index, modality, index_dir, qm, options.for_model(model))
    if len(index) == 0:
        raise DataError(f"Index {index.folder} is empty: its source holds no {index.modality} values.")
    q = embed_values(model, qm, list(queries), options.batch_size)
    return index.search(q, k, nprobe=options.nprobe, ef_search=options.ef_search, rerank=options.rerank)
