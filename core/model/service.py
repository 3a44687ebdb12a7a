"""What `fuse serve` answers, apart from HTTP: checked requests, batched forwards, items by id.

The HTTP layer (``fuse.model.service_app``) only parses requests and turns ``RequestError`` into a
4xx. Here every client value is checked before it reaches the model: a modality must be a tower,
file towers take uploaded bytes only (a client string is never opened as a path, so no server file
is read or served on a client's say-so), texts and k have bounds. Embedding and search run through
the same functions as `fuse embed` / `fuse search` (``embed_values``, ``fuse.model.search.search``),
on batches the micro-batcher collects across concurrent requests.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from fuse.base.errors import DataError, FuseError, ModelFileError
from fuse.base.inputs import input_kind
from fuse.model.batcher import MicroBatcher


@dataclass(frozen=True)
class Limits:
    """Bounds on one request (a request over one is refused with a 4xx, never truncated)."""

    max_batch: int = 32            # inputs per request, and per forward the batcher makes
    wait_ms: float = 2.0           # how long the batcher waits for more requests after the first
    max_k: int = 100               # results per search query
    max_media_bytes: int = 20 * 2**20
    max_text_chars: int = 2000


class RequestError(FuseError):
    """A request the service refuses; ``status`` is its HTTP status (400, 404, 413, 415)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def load_index(model, source, modality: str | None = None, index_dir=None, cache_dir=None, batch_size: int = 32):
    """The index to serve: an index folder `fuse search` built (opened as it is, refused if another model
    built it), or a folder, glob or manifest indexed (or brought up to date) now, as `fuse search` does."""
    from fuse.model.embed import model_fingerprint
    from fuse.model.index import IndexOptions, open_index, refuse_other_model
    from fuse.model.search import build_index

    folder = Path(source).expanduser()
    if (folder / "index.json").is_file():
        index = open_index(folder)
        refuse_other_model(folder, index.meta, model_fingerprint(model), index.modality)
    else:
        options = IndexOptions(cache_dir=cache_dir, batch_size=batch_size).for_model(model)
        index = build_index(model, folder, modality, index_dir, options=options)
    if len(index) == 0:
        raise DataError(f"Index {index.folder} is empty: its source holds no {index.modality} values.")
    index.embeddings  # read (and hash-checked) once, before the first request
    return index


class Service:
    """One model (and optionally one index) answering embed and search requests."""

    def __init__(self, model, index=None, limits: Limits = Limits()):
        self.model, self.index, self.limits = model, index, limits
        self.batcher = MicroBatcher(self._run, limits.max_batch, limits.wait_ms)
        self.index_files = index is not None and input_kind(model.input_kind(index.modality)).files
        self.positions = {} if index is None else {v: i for i, v in enumerate(index.values)}

    # --- checks -----------------------------------------------------------------------------------------------
    def modality(self, given: str | None, files: bool, filename: str = "") -> str:
        """The tower a request's inputs go to: ``given`` (checked), else the one tower that takes such inputs
        (inline values, or files; of several file towers, the one whose kind takes ``filename``'s suffix)."""
        if given:
            if given not in self.model.modalities:
                raise RequestError(f"modality '{given}': this model has towers {', '.join(self.model.modalities)}.")
            takes_files = input_kind(self.model.input_kind(given)).files
            if takes_files != files:
                raise RequestError(f"the {given} tower takes " + (
                    "files: send them as multipart/form-data fields named 'file'." if takes_files else
                    "inline values: send them as JSON."))
            return given
        fits = [m for m in self.model.modalities if input_kind(self.model.input_kind(m)).files == files]
        if len(fits) > 1 and files:  # several file towers: the one whose kind takes the file's suffix
            fits = [m for m in fits if input_kind(self.model.input_kind(m)).accepts(filename)]
        if len(fits) != 1:
            raise RequestError(f"name the modality (field 'modality'): this model has towers "
                               f"{', '.join(self.model.modalities)}, and {len(fits)} take these inputs.")
        return fits[0]

    def texts(self, modality: str, values: list, field: str = "inputs") -> list[str]:
        """Inline values, each a non-empty string within ``max_text_chars``; at most ``max_batch`` of them."""
        self.count(values)
        for i, v in enumerate(values):
            where = f"{field}[{i}]" if field == "inputs" else field
            if not isinstance(v, str) or not v.strip():
                raise RequestError(f"{where}: an empty {modality} value; send non-empty strings.")
            if len(v) > self.limits.max_text_chars:
                raise RequestError(f"{where}: {len(v)} characters, over the limit of {self.limits.max_text_chars}.", 413)
        return values

    def count(self, values: list) -> None:
        if not 0 < len(values) <= self.limits.max_batch:
            raise RequestError(f"a request holds 1 to {self.limits.max_batch} inputs (--max-batch), not {len(values)}.")

    def k(self, k) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.limits.max_k:
            raise RequestError(f"k must be an integer from 1 to {self.limits.max_k} (--max-k), not {k!r}.")
        return k

    def read_media(self, modality: str, path: str, filename: str):
        """An uploaded file (saved at ``path``) decoded by its tower's input kind; undecodable: a 400 naming it."""
        try:
            return input_kind(self.model.input_kind(modality)).read(path)
        except DataError as exc:
            raise RequestError(f"file '{filename}' is not a readable {modality} input: "
                               f"{str(exc).replace(path, filename).splitlines()[0]}") from None

    # --- answers ----------------------------------------------------------------------------------------------
    async def embed(self, modality: str, values: list) -> list[list[float]]:
        """L2-normalised embeddings of checked values (texts, or decoded media), one list per value."""
        return await self.batcher.submit(("embed", modality), values)

    async def search(self, modality: str, value, k: int) -> list[dict]:
        """The ``k`` best index items for one checked query: {rank, score, id, value[, url]}."""
        if self.index is None:
            raise RequestError("this server has no index to search: start it with fuse serve EXPORT --index DIR.", 404)
        return (await self.batcher.submit(("search", modality), [(value, k)]))[0]

    def _run(self, key: tuple, inputs: list) -> list:
        """One forward for a batch of requests' inputs (called by the batcher, in its model thread)."""
        from fuse.model.embed import embed_values
        from fuse.model.index import IndexOptions
        from fuse.model.search import search

        op, modality = key
        size = self.limits.max_batch
        if op == "embed":
            return embed_values(self.model, modality, inputs, size).tolist()
        top = max(k for _, k in inputs)
        found = search(self.model, [v for v, _ in inputs], self.index, top, query_modality=modality,
                       options=IndexOptions(batch_size=size, progress=False))
        return [[self._hit(h) for h in hits[:k]] for hits, (_, k) in zip(found, inputs)]

    def _hit(self, hit: dict) -> dict:
        item = self.positions[hit["value"]]
        return {**hit, "id": item, **({"url": f"/items/{item}"} if self.index_files else {})}

    def item_file(self, item: str):
        """(path or file object, name) of index item ``item`` (its position, as digits): only files the index
        lists are ever served, looked up by position; anything else is a 404."""
        from fuse.base.shard_refs import open_value, split_ref

        if self.index is None or not self.index_files or not item.isdigit() or int(item) >= len(self.index):
            raise RequestError(f"no item '{item[:40]}' in this server's index (items are 0 to "
                               f"{len(self.index) - 1 if self.index else -1}, and only file items are served).", 404)
        value = self.index.meta["items"][int(item)][0]
        ref = split_ref(value)
        if ref is None and not os.path.isfile(value):
            raise RequestError(f"item {item}'s file is gone from the disk; restart fuse serve to index again.", 404)
        try:
            return open_value(value), Path(ref[3] if ref else value).name
        except DataError as exc:
            raise RequestError(f"item {item} cannot be read: {exc}", 404) from None

    def thumbnail(self, item: str, size: int = 256) -> bytes:
        """A JPEG of at most ``size`` pixels a side of image item ``item``, read through its input kind (so its
        pixel limit holds); an item that does not read as an image is a 404."""
        import io

        from PIL import Image

        self.item_file(item)  # the same checks: an indexed file item, by position
        value = self.index.meta["items"][int(item)][0]
        try:
            picture = input_kind(self.model.input_kind(self.index.modality)).read(value)
        except DataError as exc:
            raise RequestError(f"item {item} cannot be read: {str(exc).splitlines()[0]}", 404) from None
        if not isinstance(picture, Image.Image):
            raise RequestError(f"item {item} is not an image, so it has no thumbnail; GET /items/{item}.", 404)
        picture = picture.convert("RGB")
        picture.thumbnail((size, size))
        out = io.BytesIO()
        picture.save(out, format="JPEG", quality=85)
        return out.getvalue()

    # --- descriptions -----------------------------------------------------------------------------------------
    def health(self) -> dict:
        index = None if self.index is None else {"modality": self.index.modality, "items": len(self.index),
                                                 "input": self.model.input_kind(self.index.modality),
                                                 "files": self.index_files}
        return {"status": "ok", "modalities": list(self.model.modalities), "index": index,
                "batching": self.batcher.stats.as_dict(), "limits": asdict(self.limits)}

    def card(self) -> dict:
        """The model card: towers (input kind, what they accept, encoder and head), size, and the export's README."""
        from fuse.recipes.export_format import read_config

        try:
            folder, config = read_config(getattr(self.model, "path", ""))
            text = (folder / "README.md").read_text(encoding="utf-8") if (folder / "README.md").is_file() else ""
        except (ModelFileError, OSError):
            config, text = {}, ""
        towers = {m: {"input": self.model.input_kind(m), "files": input_kind(self.model.input_kind(m)).files,
                      "extensions": list(input_kind(self.model.input_kind(m)).extensions),
                      "encoder": self.model.specs[m]["encoder"].name, "head": self.model.specs[m]["head"].name}
                  for m in self.model.modalities}
        return {"embed_dim": self.model.embed_dim, "fuse_version": config.get("fuse_version"), "towers": towers,
                "pairs": config.get("pairs"), "card": text}

    async def close(self) -> None:
        await self.batcher.close()


async def decode_all(service: Service, modality: str, saved: list[tuple[str, str]]) -> list:
    """Uploaded files [(path, client's name)] decoded off the event loop, in order."""
    return [await asyncio.to_thread(service.read_media, modality, path, name) for path, name in saved]
