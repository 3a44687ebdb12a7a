"""The pieces of a self-contained HTML page: inline data URIs, thumbnails, sections, tables.

Everything is inlined (plots as PNG data URIs, thumbnails as JPEG, audio as WAV data URIs) and a
Content-Security-Policy forbids any fetch, so a page opens offline, in a mail, anywhere. A
``generator`` meta tag marks pages fuse wrote, so ``fuse report -o`` replaces only its own pages.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from fuse.base.errors import FuseError

GENERATOR = '<meta name="generator" content="fuse report">'
CSP = "default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'"
STYLE = """body{font:14px system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}pre{background:#f6f6f6;padding:8px;max-height:320px;overflow:auto}
.q{margin:10px 0;padding:6px;border:1px solid #eee}.hits{display:flex;gap:8px}
.hit{width:112px;font-size:11px;text-align:center;border:3px solid transparent;padding:2px}
.hit.ok{border-color:#2a2}.hit img{width:96px;height:96px;object-fit:contain}.runs{display:flex;gap:12px}
.runs img{width:100%}.muted{color:#777}"""


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png_of(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return data_uri(buf.getvalue(), "image/png")


def thumbnail(value: str, is_file: bool) -> str:
    """An item as HTML: inline values (text) as text; a file by what it holds, not by its kind's name: an
    image as a small JPEG, audio as a player, a video as its first frame; anything else as its name."""
    if not is_file:
        return html.escape(value)
    esc = html.escape(Path(value).name)
    readers = (_image_of, _audio_of, _video_of)
    for read in readers:
        try:
            return read(value) + f"<br>{esc}"
        except Exception:  # noqa: BLE001, S112 - not this kind of file: try the next reader
            continue
    return f"{esc}<br><span class=muted>(not shown)</span>"


def _jpeg(img) -> str:
    img = img.convert("RGB")
    img.thumbnail((96, 96))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return f'<img alt="thumbnail" src="{data_uri(buf.getvalue(), "image/jpeg")}">'


def _image_of(path: str) -> str:
    from PIL import Image

    with Image.open(path) as img:
        return _jpeg(img)


def _audio_of(path: str) -> str:
    import soundfile as sf

    wav, rate = sf.read(path, dtype="float32", always_2d=True, frames=16000 * 10)
    buf = io.BytesIO()
    sf.write(buf, wav, rate, format="WAV", subtype="PCM_16")
    return f'<audio controls src="{data_uri(buf.getvalue(), "audio/wav")}"></audio>'


def _video_of(path: str) -> str:
    import av

    with av.open(path) as box:
        return _jpeg(next(box.decode(video=0)).to_image())


def query_block(item: str, note: str, hits: list[tuple[str, bool]]) -> str:
    """One query (or classified item) as HTML, with its top results best first as (html, correct) pairs:
    the correct ones framed green and ticked."""
    cells = "".join(f'<div class="hit{" ok" if ok else ""}">{"✓ " if ok else ""}#{r}<br>{body}</div>'
                    for r, (body, ok) in enumerate(hits, 1))
    return f'<div class="q"><b>{item}</b> <span class=muted>{note}</span><div class="hits">{cells}</div></div>'


def section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}"><h2>{html.escape(title)}</h2>{body}</section>'


def metrics_table(columns: dict[str, dict]) -> str:
    """Rows: metrics; columns: result sets (before / after, or runs)."""
    keys = list(dict.fromkeys(k for c in columns.values() for k, v in c.items() if isinstance(v, (int, float))))
    head = "<tr><th>metric</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in columns) + "</tr>"
    rows = "".join("<tr><td>" + html.escape(k) + "</td>" + "".join(
        f"<td>{c[k]:.2f}</td>" if isinstance(c.get(k), (int, float)) else "<td>-</td>" for c in columns.values())
        + "</tr>" for k in keys)
    return f"<table>{head}{rows}</table>"


def page(title: str, sections: list[str]) -> str:
    return (f'<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
            f'content="{CSP}">{GENERATOR}<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>'
            f"<h1>{html.escape(title)}</h1>" + "".join(sections) + "</body></html>")


def check_replaceable(out: str | Path) -> None:
    """``-o`` may name a new file or a page fuse report wrote (it carries the generator tag), never
    someone's other file: checked before any work."""
    out = Path(out)
    if out.is_dir():
        raise FuseError(f"-o {out} is a folder; give a file name such as {out / 'report.html'}")
    if out.exists():
        with open(out, "rb") as f:
            head = f.read(4096)
        if GENERATOR.encode() not in head:
            raise FuseError(f"-o {out} exists and was not written by fuse report; give a new file name "
                            "(fuse replaces only its own pages).")
