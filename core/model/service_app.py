"""The HTTP face of `fuse serve` (FastAPI, the optional extra ``serve``): routes, request parsing, 4xx.

    GET  /             the search page (fuse.model.service_page)
    GET  /health       status, the index, batching counters and limits
    GET  /model        the model card: towers, what they take, the export's README
    POST /embed        JSON {"modality", "inputs": [texts]} or multipart: modality + files "file"
    POST /search       JSON {"query", "k", "modality"} or multipart: one file "file" (+ k, modality)
    GET  /items/ID     an indexed file, by its position in the index (nothing else is ever served)
    GET  /items/ID/thumbnail   a JPEG of at most 256 pixels a side of an indexed image

Every refusal is JSON {"error": "one line"} with a 4xx status; the answers come from
``fuse.model.service.Service``. Bodies are bounded by their Content-Length before they are read.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException

from fuse.base.errors import FuseError
from fuse.model.service import RequestError, Service, decode_all
from fuse.model.service_page import csp, search_page


class EmbedBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[str]
    modality: str = ""


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str
    k: int = 10
    modality: str = ""


def make_app(service: Service) -> FastAPI:
    """The ASGI app serving ``service``; its micro-batcher stops with the app."""

    @asynccontextmanager
    async def lifespan(app):
        yield
        await service.close()

    app = FastAPI(title="fuse serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(FuseError)
    async def refused(request, exc: FuseError):  # RequestError, or a user error from the model (bad input)
        return JSONResponse({"error": str(exc).splitlines()[0]}, status_code=getattr(exc, "status", 400))

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(search_page(service.limits.max_k), headers={"Content-Security-Policy": csp()})

    @app.get("/health")
    async def health():
        return service.health()

    @app.get("/model")
    async def card():
        return service.card()

    @app.post("/embed")
    async def embed(request: Request):
        return await embed_answer(service, request)

    @app.post("/search")
    async def search(request: Request):
        return await search_answer(service, request)

    @app.get("/items/{item}")
    async def item(item: str):
        source, name = service.item_file(item)
        if isinstance(source, str):
            return FileResponse(source, filename=name, content_disposition_type="inline")
        return Response(source.read(), media_type=mimetypes.guess_type(name)[0] or "application/octet-stream")

    @app.get("/items/{item}/thumbnail")
    async def thumbnail(item: str):
        data = await asyncio.to_thread(service.thumbnail, item)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    return app


async def embed_answer(service: Service, request: Request) -> dict:
    """POST /embed: texts (JSON) or files (multipart) -> one embedding per input, in order."""
    limits = service.limits
    if is_json(request):
        body = parse(EmbedBody, await read_json(request, limits.max_batch * limits.max_text_chars * 4))
        modality = service.modality(body.modality, files=False)
        vectors = await service.embed(modality, service.texts(modality, body.inputs))
        return {"modality": modality, "dim": service.model.embed_dim, "embeddings": vectors}
    form = await read_form(request, limits.max_batch, limits.max_media_bytes)
    try:
        files = form.getlist("file")
        service.count(files)
        modality = service.modality(str(form.get("modality") or ""), files=True, filename=files[0].filename or "")
        with tempfile.TemporaryDirectory(prefix="fuse-serve-") as tmp:
            raw = await decode_all(service, modality, await save_uploads(files, Path(tmp), service))
            vectors = await service.embed(modality, raw)
    finally:
        await form.close()
    return {"modality": modality, "dim": service.model.embed_dim, "embeddings": vectors}


async def search_answer(service: Service, request: Request) -> dict:
    """POST /search: one text (JSON) or one file (multipart) -> its k best index items."""
    limits = service.limits
    if is_json(request):
        body = parse(SearchBody, await read_json(request, limits.max_text_chars * 4 + 4096))
        modality = service.modality(body.modality, files=False)
        query = service.texts(modality, [body.query], "query")[0]
        return answer(service, modality, body.k, await service.search(modality, query, service.k(body.k)))
    form = await read_form(request, 1, limits.max_media_bytes)
    try:
        files = form.getlist("file")
        if len(files) != 1:
            raise RequestError(f"a search takes one query file (field 'file'), not {len(files)}.")
        k = service.k(int_field(form.get("k"), "k", 10))
        modality = service.modality(str(form.get("modality") or ""), files=True, filename=files[0].filename or "")
        with tempfile.TemporaryDirectory(prefix="fuse-serve-") as tmp:
            raw = await decode_all(service, modality, await save_uploads(files, Path(tmp), service))
            hits = await service.search(modality, raw[0], k)
    finally:
        await form.close()
    return answer(service, modality, k, hits)


def answer(service: Service, modality: str, k: int, hits: list[dict]) -> dict:
    index = service.health()["index"]
    return {"query_modality": modality, "k": k, "index": index, "results": hits}


def is_json(request: Request) -> bool:
    """JSON or multipart/form-data; any other body is a 415."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("application/json", "multipart/form-data"):
        return kind == "application/json"
    raise RequestError(f"send application/json (texts) or multipart/form-data (files), not '{kind or 'nothing'}'.",
                       415)


def check_length(request: Request, limit: int) -> None:
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise RequestError("the request has no Content-Length; send the body in one piece.", 411)
    if int(length) > limit:
        raise RequestError(f"the request is {int(length)} bytes, over this server's limit of {limit} "
                           "(--max-media-mb, --max-batch).", 413)


async def read_json(request: Request, limit: int):
    check_length(request, limit)
    try:
        return json.loads(await request.body())
    except ValueError as exc:
        raise RequestError(f"the body is not JSON: {exc}.") from None


def parse(schema: type[BaseModel], data):
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise RequestError(f"{where}: {first['msg']} (fields: {', '.join(schema.model_fields)}).") from None


async def read_form(request: Request, max_files: int, max_bytes: int):
    check_length(request, max_files * max_bytes + 65536)
    try:
        return await request.form(max_files=max_files, max_fields=8)
    except HTTPException as exc:
        raise RequestError(f"the form is refused: {str(exc.detail).rstrip('.')}.") from None


def int_field(value, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(str(value))
    except ValueError:
        raise RequestError(f"{name} must be an integer, not {str(value)[:40]!r}.") from None


async def save_uploads(files: list, folder: Path, service: Service) -> list[tuple[str, str]]:
    """Each uploaded file written under ``folder`` with a name of ours (only its suffix is the client's),
    each within ``max_media_bytes``: [(path, the client's file name)]."""
    limit = service.limits.max_media_bytes
    saved = []
    for i, upload in enumerate(files):
        if isinstance(upload, str):
            raise RequestError("field 'file' must be a file upload, not a text field.")
        name = Path(upload.filename or f"file-{i}").name
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise RequestError(f"file '{name}' is over the {limit // 2**20} MB limit (--max-media-mb).", 413)
        suffix = Path(name).suffix.lower()
        path = folder / f"upload-{i}{suffix if suffix[1:].isalnum() and len(suffix) <= 8 else ''}"
        path.write_bytes(data)
        saved.append((str(path), name))
    return saved
