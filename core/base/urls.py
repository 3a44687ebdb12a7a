"""Remote shard addresses: which strings name one (``https://``, ``s3://``, any fsspec URL, ``pipe:CMD``)
and the form of them that may be printed or recorded.

A URL can carry a secret (``https://user:token@host/...``, a presigned ``?X-Amz-Signature=...``);
fuse never writes one: messages, run folders, exports and cache keys use ``redact(url)``, which
drops the userinfo and the query. The real URL lives only in memory, for the request itself.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from fuse.base.errors import DataError

SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
PIPE = "pipe:"


def is_remote(spec: str) -> bool:
    """Whether a shard entry names a URL (``scheme://``, not ``file://``) or a command (``pipe:``)."""
    if spec.startswith(PIPE):
        return True
    m = SCHEME.match(spec)
    return m is not None and m.group(1).lower() != "file"


def is_pipe(spec: str) -> bool:
    return spec.startswith(PIPE)


def check_url(url: str) -> None:
    """Refuse an address fuse cannot read, with one line naming it (without its secrets)."""
    if is_pipe(url):
        if not url[len(PIPE):].strip():
            raise DataError("pipe: names no command; write pipe:CMD, e.g. 'pipe:cat /data/a-000.tar'.")
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError as exc:
        raise DataError(f"{redact(url)}: malformed URL ({exc}).") from None
    if parts.scheme.lower() in ("http", "https", "s3", "gs", "gcs") and not parts.hostname:
        raise DataError(f"{redact(url)}: malformed URL: no host (bucket) after {parts.scheme}://.")
    if not parts.path.strip("/"):
        raise DataError(f"{redact(url)}: malformed URL: it names no shard file after the host.")


def redact(url: str) -> str:
    """``url`` without userinfo and query (``https://u:p@h/a.tar?sig=x`` -> ``https://h/a.tar``); a
    ``pipe:`` command with every URL inside it redacted."""
    if is_pipe(url):
        return PIPE + re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+", lambda m: redact(m.group(0)), url[len(PIPE):])
    base = re.split(r"[?#]", url, maxsplit=1)[0]
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/]*@", r"\1", base)


def redact_source(value):
    """A recipe's data.train / data.val value (a string or a list) with its URLs redacted."""
    if isinstance(value, list):
        return [redact_source(v) for v in value]
    return redact(value) if isinstance(value, str) and is_remote(value) else value
