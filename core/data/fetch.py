"""Reading one remote shard into a local spool file: HTTP(S), any fsspec URL (s3://, gs://, ...) or a
``pipe:CMD``'s stdout, with a timeout, retries with backoff, and the shard's identity.

A shard is read whole and in order, once per pass, into ``<cache_dir>/remote-spool/``; the caller
indexes or encodes it and deletes it, so a process never holds more than one shard there. What a
read records as the shard's identity (its size, the server's ETag, the SHA-256 of the bytes read)
lets a later read notice that the shard changed. Every message names the URL as ``redact`` writes it.
Credentials come from where each client looks: the environment, ``~/.aws``, the cloud SDKs' config,
or for HTTP the userinfo of the URL itself (sent as Basic auth, never recorded).
"""

from __future__ import annotations

import base64
import hashlib
import os
import select
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

from fuse.base.errors import DataError
from fuse.base.urls import is_pipe, redact

CHUNK = 1 << 20
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}  # protocol -> the fuse extra whose client reads it


@dataclass(frozen=True)
class FetchOptions:
    """How hard a read tries: ``retries`` more attempts after a transient fault (a dropped connection,
    a timeout, a 5xx), waiting ``backoff_s`` then twice as long each time; ``timeout_s`` bounds each
    wait for bytes (a stalled server). ``on_error``: after the last attempt, "stop" the run or
    "skip" the shard and count it (while indexing; encoding always stops, and a rerun resumes)."""

    retries: int = 3
    timeout_s: float = 60.0
    backoff_s: float = 1.0
    on_error: str = "stop"


class Transient(Exception):
    """A fault worth another attempt."""


class _Timed:
    """A pipe read end whose every read waits at most ``timeout`` seconds for bytes."""

    def __init__(self, proc: subprocess.Popen, timeout: float):
        self.proc, self.timeout = proc, timeout

    def read(self, n: int) -> bytes:
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        if not ready:
            raise Transient(f"no bytes for {self.timeout:g} s")
        return os.read(self.proc.stdout.fileno(), n)


@contextmanager
def _pipe(cmd: str, timeout: float) -> Iterator[tuple[object, dict]]:
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        try:
            yield _Timed(proc, timeout), {}
            code = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if code != 0:
            err.seek(0)
            last = (err.read().decode(errors="replace").strip().splitlines() or ["no message"])[-1]
            raise Transient(f"the command exited with code {code} ({last[:200]})")


@contextmanager
def _http(url: str, timeout: float) -> Iterator[tuple[object, dict]]:
    parts = urlsplit(url)
    auth = None
    if parts.username is not None:  # urllib does not send a URL's userinfo by itself
        token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = "Basic " + base64.b64encode(token).decode()
        url = url.replace(parts.netloc, parts.netloc.rsplit("@", 1)[1], 1)
    request = urllib.request.Request(url, headers={"User-Agent": "fuse"})
    if auth:
        request.add_unredirected_header("Authorization", auth)  # never sent on to a host a redirect names
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise Transient(f"HTTP {exc.code} {exc.reason}") from None
        hint = " (check the credentials)" if exc.code in (401, 403) else ""
        raise DataError(f"HTTP {exc.code} {exc.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Transient(str(getattr(exc, "reason", exc))) from None
    with resp:
        size = resp.headers.get("Content-Length")
        yield resp, {"bytes": int(size) if size and size.isdigit() else None, "etag": resp.headers.get("ETag")}


def _storage_options(protocol: str, timeout: float) -> dict:
    """Per-client timeouts (the clients' own retries off: ours count); credentials stay the client's."""
    if protocol in ("s3", "s3a"):
        return {"config_kwargs": {"connect_timeout": timeout, "read_timeout": timeout,
                                  "retries": {"max_attempts": 1}}}
    if protocol in ("gs", "gcs"):
        return {"timeout": timeout}
    return {}


@contextmanager
def _fsspec(url: str, timeout: float) -> Iterator[tuple[object, dict]]:
    import fsspec

    protocol = url.split("://", 1)[0].lower()
    try:
        fs, path = fsspec.core.url_to_fs(url, **_storage_options(protocol, timeout))
    except (ImportError, ValueError) as exc:
        extra = EXTRAS.get(protocol)
        fix = f"pip install 'fuse-align[{extra}]'" if extra else f"install the fsspec package for {protocol}://"
        raise DataError(f"{protocol}:// needs a client that is not installed ({exc}); {fix}.") from None
    try:
        info = fs.info(path)
        with fs.open(path, "rb", block_size=CHUNK) as f:
            yield f, {"bytes": info.get("size"), "etag": info.get("ETag") or info.get("etag")}
    except FileNotFoundError:
        raise DataError("not found") from None
    except PermissionError as exc:
        raise DataError(f"access denied ({exc}); check the credentials") from None
    except DataError:
        raise
    except Exception as exc:  # each client has its own exception types; a credential error is permanent
        if "credential" in type(exc).__name__.lower() or "credentials" in str(exc).lower():
            raise DataError(f"no credentials found ({type(exc).__name__}): set them as the {protocol} client "
                            "expects (environment variables or its config file)") from None
        raise Transient(f"{type(exc).__name__}: {exc}") from None


def _source(url: str, timeout: float):
    if is_pipe(url):
        return _pipe(url[len("pipe:"):], timeout)
    if url.split("://", 1)[0].lower() in ("http", "https"):
        return _http(url, timeout)
    return _fsspec(url, timeout)


def _copy(url: str, dest: Path, timeout: float) -> dict:
    """One attempt: the shard's bytes into ``dest``; its identity."""
    digest, n = hashlib.sha256(), 0
    with _source(url, timeout) as (stream, meta), open(dest, "wb") as out:
        while True:
            try:
                chunk = stream.read(CHUNK)
            except (DataError, Transient):
                raise
            except Exception as exc:  # a dropped connection, a read timeout: each library names it its own way
                raise Transient(f"{type(exc).__name__} after {n} bytes: {exc}") from None
            if not chunk:
                break
            digest.update(chunk)
            out.write(chunk)
            n += len(chunk)
    if meta.get("bytes") is not None and n != meta["bytes"]:
        raise Transient(f"the connection ended after {n} of {meta['bytes']} bytes")
    return {"bytes": n, "etag": meta.get("etag"), "sha256": digest.hexdigest()}


def sweep_spool(spool: Path) -> None:
    """Remove spool files of processes that are gone (a killed run's half-read shard)."""
    for f in spool.glob("*.tar"):
        pid = f.name.split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                f.unlink(missing_ok=True)
            except PermissionError:
                pass


@contextmanager
def fetched(url: str, spool: Path, options: FetchOptions) -> Iterator[tuple[Path, dict]]:
    """The shard at ``url`` as a local file (deleted afterwards) and its identity. A permanent fault, or a
    transient one that outlasts the retries, raises ``FetchFailed`` naming the URL (redacted); whether
    that stops the run (``options.on_error``) is the caller's to decide."""
    spool.mkdir(parents=True, exist_ok=True)
    dest = spool / f"{os.getpid()}-{uuid.uuid4().hex[:12]}.tar"
    try:
        yield dest, _with_retries(url, dest, options)
    finally:
        dest.unlink(missing_ok=True)


class FetchFailed(DataError):
    """A shard could not be read: permanently (not found, no credentials) or after every retry."""


def _with_retries(url: str, dest: Path, options: FetchOptions) -> dict:
    wait, problem = options.backoff_s, ""
    for attempt in range(options.retries + 1):
        try:
            return _copy(url, dest, options.timeout_s)
        except Transient as exc:
            problem = str(exc)
        except DataError as exc:
            raise FetchFailed(f"{redact(url)}: {redact_text(str(exc))}") from None
        if attempt < options.retries:
            time.sleep(wait)
            wait *= 2
    raise FetchFailed(f"{redact(url)}: unreadable after {options.retries + 1} attempts ({redact_text(problem)}); "
                      "check the host, or raise data.remote.retries / timeout_s")


def redact_text(text: str) -> str:
    """A message from a client library with any URL in it redacted."""
    return redact("pipe:" + text)[len("pipe:"):]
