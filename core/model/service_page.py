"""The search page `fuse serve` shows at ``/``: type a query (or pick a file), see the top items.

One self-contained page: its script and style are inline, it loads nothing from elsewhere, and its
Content-Security-Policy (sent as a header, the script allowed by its hash) lets it talk only to the
server that sent it: ``/search`` for results, ``/items/ID/thumbnail`` for images (linked to the full
``/items/ID``), ``/items/ID`` for audio and video players.
``/?q=TEXT`` runs a query on load, so a search can be linked.
"""

from __future__ import annotations

import base64
import hashlib

SCRIPT = r"""
const $ = s => document.querySelector(s);
const players = {image: 'img', audio: 'audio', video: 'video'};

function show(body) {
  const box = $('#results');
  box.replaceChildren();
  for (const hit of body.results) {
    const div = document.createElement('div');
    div.className = 'hit';
    const name = hit.url ? hit.value.split(/[\\/]/).pop() : hit.value;
    const tag = hit.url ? (players[body.index.input] || 'a') : 'p';
    const media = document.createElement(tag);
    if (tag === 'img') {
      media.alt = name;
      media.addEventListener('load', () => div.classList.add('loaded'));
      media.addEventListener('error', () => div.classList.add('broken'));
      media.src = hit.url + '/thumbnail';
    } else if (tag === 'audio' || tag === 'video') {
      media.controls = true;
      media.preload = 'metadata';
      media.src = hit.url;
    } else if (tag === 'a') {
      media.href = hit.url;
      media.textContent = name;
    } else {
      media.textContent = hit.value;
    }
    const caption = document.createElement('div');
    caption.className = 'caption';
    caption.textContent = `${hit.rank}. ${hit.score.toFixed(3)}` + (hit.url ? ` ${name}` : '');
    if (tag === 'img') {  // the thumbnail opens the full image
      const link = document.createElement('a');
      link.href = hit.url;
      link.append(media);
      div.append(link, caption);
    } else {
      div.append(media, caption);
    }
    box.append(div);
  }
  $('#status').textContent = `${body.results.length} of ${body.index.items} ${body.index.modality} items`;
  box.dataset.state = 'done';
}

async function run(event) {
  if (event) event.preventDefault();
  const k = Number($('#k').value);
  const file = $('#file').files[0];
  let request;
  if (file) {
    const form = new FormData();
    form.append('file', file);
    form.append('k', String(k));
    request = {method: 'POST', body: form};
  } else {
    request = {method: 'POST', headers: {'content-type': 'application/json'},
               body: JSON.stringify({query: $('#q').value, k})};
  }
  $('#status').textContent = 'searching...';
  try {
    const response = await fetch('/search', request);
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    show(body);
  } catch (err) {
    $('#status').textContent = 'error: ' + err.message;
    $('#results').dataset.state = 'error';
  }
}

$('#search').addEventListener('submit', run);
$('#file').addEventListener('change', () => { if ($('#file').files.length) run(); });
const q = new URLSearchParams(location.search).get('q');
if (q) { $('#q').value = q; run(); }
"""

STYLE = """body{font:14px system-ui,sans-serif;margin:24px;color:#222}form{display:flex;gap:8px;flex-wrap:wrap}
#q{flex:1;min-width:240px;font-size:16px;padding:4px}#status{color:#777;margin:10px 0}
#results{display:flex;flex-wrap:wrap;gap:10px}.hit{width:168px;font-size:12px;word-break:break-all}
.hit img{width:160px;height:160px;object-fit:contain;background:#f4f4f4;opacity:.3}.hit.loaded img{opacity:1}
.hit audio,.hit video{width:160px}.hit p{font-size:14px;margin:4px 0}.caption{color:#555}"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fuse search</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{style}</style></head>
<body><h1>fuse search</h1>
<form id="search"><input id="q" name="q" placeholder="a query" autofocus>
<label>or a file <input id="file" type="file"></label>
<label>k <input id="k" type="number" min="1" max="{max_k}" value="{k}" style="width:4em"></label>
<button type="submit">Search</button></form>
<div id="status"></div><div id="results"></div>
<script>{script}</script></body></html>"""


def csp() -> str:
    """The page's Content-Security-Policy: this server only, and only the page's own script."""
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    return (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src 'self'; "
            "media-src 'self'; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")


def search_page(max_k: int, k: int = 12) -> str:
    return PAGE.format(style=STYLE, script=SCRIPT, max_k=max_k, k=min(k, max_k))
