"""`fuse serve`: a real server on 127.0.0.1 answers embed and search as the Python API does, batches
concurrent requests onto fewer forwards, refuses bad input with a 4xx, serves indexed files by id
only, and its search page works in headless Chromium (Debian's package) with no request elsewhere."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import fuse

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from fuse.model.service import Limits, Service, load_index  # noqa: E402
from fuse.model.service_app import make_app  # noqa: E402

# The browser's own traffic (sign-in, spelling dictionaries, autofill, clock) is switched off where a flag
# can, and no host but 127.0.0.1 resolves; the net log tells the page's requests (initiated by its origin)
# from the browser's.
QUIET_BROWSER = ["--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--no-pings",
                 "--disable-domain-reliability", "--disable-spell-checking",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                 "--disable-features=AutofillServerCommunication,Translate,OptimizationHints,SpellCheck"]
QUERIES = ["a red circle", "a blue square", "a green triangle", "the red square on white", "circle coloured blue",
           "a green circle", "a red triangle", "the blue circle on white", "square coloured green", "a blue triangle"]


def start(app) -> tuple[str, uvicorn.Server, threading.Thread]:
    """uvicorn serving ``app`` in a thread on a free loopback port; returns once it accepts requests."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


@pytest.fixture(scope="module")
def photos(shapes_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve") / "photos"
    shutil.copytree(shapes_data["val"].parent / "img", folder)
    return folder


@pytest.fixture(scope="module")
def served(trained_shapes_export, photos):
    """The tiny trained model with an index of the photos, served in this process (so a hook can count
    the text encoder's forwards), and the same model without an index."""
    model = fuse.load(trained_shapes_export)
    index = load_index(model, photos)
    limits = Limits(max_batch=16, wait_ms=100, max_k=20, max_media_bytes=200_000)
    servers = [start(make_app(Service(model, index, limits))), start(make_app(Service(model, None, limits)))]
    yield {"url": servers[0][0], "bare": servers[1][0], "model": model, "index": index}
    for _, server, thread in servers:
        server.should_exit = True
        thread.join(10)


def test_concurrent_searches_share_forwards_and_match_the_api(served):
    model, index = served["model"], served["index"]
    forwards = []
    hook = model.encoders["text"].register_forward_hook(lambda *a: forwards.append(1))

    async def ask_all():
        async with httpx.AsyncClient(base_url=served["url"], timeout=60) as client:
            return await asyncio.gather(*[client.post("/search", json={"query": q, "k": 3 + i % 4})
                                          for i, q in enumerate(QUERIES)])

    try:
        before = httpx.get(served["url"] + "/health").json()["batching"]
        answers = asyncio.run(ask_all())
        after = httpx.get(served["url"] + "/health").json()["batching"]
    finally:
        hook.remove()
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert 1 <= len(forwards) < len(QUERIES)  # the text encoder ran on batches of requests
    assert after["requests"] - before["requests"] == len(QUERIES)
    assert after["batches"] - before["batches"] == len(forwards)
    direct = model.search(QUERIES, index, k=6, query_modality="text")
    for i, (answer, want) in enumerate(zip(answers, direct)):
        got = answer.json()["results"]
        want = want[:3 + i % 4]
        assert [h["value"] for h in got] == [h["value"] for h in want]
        assert [h["rank"] for h in got] == [h["rank"] for h in want]
        assert torch.allclose(torch.tensor([h["score"] for h in got]), torch.tensor([h["score"] for h in want]),
                              atol=1e-5)
        assert [index.values[h["id"]] for h in got] == [h["value"] for h in want]
        assert all(h["url"] == f"/items/{h['id']}" for h in got)


def test_embed_texts_and_files_equal_the_api(served, photos):
    model, url = served["model"], served["url"]
    texts = QUERIES[:3]
    got = httpx.post(url + "/embed", json={"modality": "text", "inputs": texts}).json()
    assert got["modality"] == "text" and got["dim"] == model.embed_dim
    assert torch.allclose(torch.tensor(got["embeddings"]), model.embed("text", texts), atol=1e-5)
    files = sorted(photos.glob("*.png"))[:2]
    got = httpx.post(url + "/embed", files=[("file", (f.name, f.read_bytes(), "image/png")) for f in files]).json()
    assert got["modality"] == "image"  # inferred: the one file tower
    assert torch.allclose(torch.tensor(got["embeddings"]), model.embed("image", [str(f) for f in files]), atol=1e-5)


def test_image_query_finds_itself_as_the_api_does(served, photos):
    model, url = served["model"], served["url"]
    query = sorted(photos.glob("*.png"))[3]
    answer = httpx.post(url + "/search", files={"file": ("q.png", query.read_bytes(), "image/png")},
                        data={"k": "4"}).json()
    want = model.search([str(query)], served["index"], k=4, query_modality="image")[0]
    assert answer["query_modality"] == "image" and answer["index"]["items"] == len(served["index"])
    assert [h["value"] for h in answer["results"]] == [h["value"] for h in want]
    assert answer["results"][0]["value"] == str(query.resolve()) and answer["results"][0]["score"] > 0.999


def test_bad_requests_are_one_line_4xx(served, photos):
    url = served["url"]
    png = sorted(photos.glob("*.png"))[0].read_bytes()
    cases = [
        (dict(json={"query": "a cat", "modality": "audio"}), 400, "has towers image, text"),
        (dict(json={"query": "/etc/hostname", "modality": "image"}), 400, "the image tower takes files"),
        (dict(json={"query": "a cat", "k": 0}), 400, "k must be an integer from 1 to 20"),
        (dict(json={"query": "a cat", "k": 21}), 400, "k must be an integer from 1 to 20"),
        (dict(json={"query": "   "}), 400, "query: an empty text value"),
        (dict(json={"query": "a" * 2001}), 413, "2001 characters, over the limit of 2000"),
        (dict(json={"query": "a cat", "extra": 1}), 400, "extra: Extra inputs are not permitted"),
        (dict(content=b"{nope", headers={"content-type": "application/json"}), 400, "the body is not JSON"),
        (dict(content=b"a cat", headers={"content-type": "text/plain"}), 415, "send application/json"),
        (dict(files={"file": ("x.png", b"not an image at all", "image/png")}), 400,
         "file 'x.png' is not a readable image input"),
        (dict(files={"file": ("big.png", png + b"\0" * 300_000, "image/png")}), 413, "limit"),
        (dict(files={"file": ("q.png", png, "image/png")}, data={"k": "many"}), 400, "k must be an integer"),
        (dict(files=[("file", ("a.png", png, "image/png")), ("file", ("b.png", png, "image/png"))]), 400,
         "Maximum number of files is 1"),
    ]
    for kwargs, status, message in cases:
        answer = httpx.post(url + "/search", **kwargs)
        assert answer.status_code == status and message in answer.json()["error"], (kwargs.keys(), answer.text)
        assert "\n" not in answer.json()["error"]
    too_many = httpx.post(url + "/embed", json={"modality": "text", "inputs": ["a"] * 17})
    assert too_many.status_code == 400 and "1 to 16 inputs" in too_many.json()["error"]
    bare = httpx.post(served["bare"] + "/search", json={"query": "a red circle"})
    assert bare.status_code == 404 and "no index" in bare.json()["error"]
    assert httpx.get(served["bare"] + "/health").json()["index"] is None


def test_only_indexed_files_are_served_and_only_by_id(served, photos):
    url = served["url"]
    index = served["index"]
    first = httpx.get(url + "/items/0")
    assert first.status_code == 200 and first.content == Path(index.values[0]).read_bytes()
    assert first.headers["content-type"] == "image/png"
    from PIL import Image

    thumb = httpx.get(url + "/items/0/thumbnail")
    assert thumb.headers["content-type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(thumb.content))
    assert picture.format == "JPEG" and picture.size == Image.open(index.values[0]).size  # 64 px: not enlarged
    host, port = url.removeprefix("http://").split(":")
    secret = photos.parent / "secret.txt"
    secret.write_text("root:do-not-serve")
    for path in ["/items/../../etc/passwd", "/items/..%2F..%2Fetc%2Fpasswd", "/items/%2e%2e%2fsecret.txt",
                 "/items/-1", f"/items/{len(index)}", "/items/0/../../secret.txt", "/../secret.txt",
                 "/items/1e1", "/items/0x1", f"/items/{secret}", "/items/%2Fetc%2Fpasswd", "/items/..",
                 "/static/../secret.txt", "/secret.txt", "/items/../thumbnail", f"/items/{len(index)}/thumbnail",
                 "/items/0/thumbnail/../../../secret.txt", "/items/%2e%2e/thumbnail"]:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", path)  # sent as written, not normalised by a client
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert response.status == 404, (path, response.status)
        assert b"root:" not in body and b"do-not-serve" not in body


def test_health_and_model_card(served, trained_shapes_export):
    health = httpx.get(served["url"] + "/health").json()
    assert health["status"] == "ok" and health["modalities"] == ["image", "text"]
    assert health["index"] == {"modality": "image", "items": len(served["index"]), "input": "image", "files": True}
    assert health["limits"]["max_k"] == 20
    card = httpx.get(served["url"] + "/model").json()
    assert card["embed_dim"] == served["model"].embed_dim
    assert card["towers"]["image"]["files"] is True and card["towers"]["text"]["input"] == "text"
    assert card["card"] == (trained_shapes_export / "README.md").read_text()


@pytest.fixture(scope="module")
def cli_server(trained_shapes_export, photos, tmp_path_factory):
    """`fuse serve` as a user runs it, in its own process, on a free port; stopped with Ctrl-C (SIGINT)."""
    log = tmp_path_factory.mktemp("serve-log") / "out.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fuse", "serve", str(trained_shapes_export), "--index",
                                 str(photos), "--port", "0"], stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            found = re.search(r"on (http://127\.0\.0\.1:\d+/)", log.read_text())
            if found or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert found, log.read_text()
        url = found.group(1)
        for _ in range(100):
            try:
                if httpx.get(url + "health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(2)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()


def test_the_command_serves_an_index(cli_server, photos):
    health = httpx.get(cli_server + "health").json()
    assert health["index"]["items"] == len(list(photos.glob("*.png")))
    page = httpx.get(cli_server)
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert not re.search(r'(src|href)="(?!/)', page.text)  # nothing the page loads comes from elsewhere


def test_chromium_page_shows_results_with_no_request_elsewhere(cli_server, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    netlog = tmp_path / "net.json"
    dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", *QUIET_BROWSER,
                          f"--user-data-dir={tmp_path / 'profile'}", f"--log-net-log={netlog}",
                          "--virtual-time-budget=10000", "--dump-dom", cli_server + "?q=a+red+circle"],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-state="done"' in dom, dom[-2000:]
    hits = re.findall(r'<div class="hit( [a-z]+)?">', dom)
    assert len(hits) == 12 and all(h == " loaded" for h in hits), hits  # every image decoded
    assert "red" in re.search(r'class="caption">1\. [0-9.]+ ([^<]+)<', dom).group(1)
    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    jobs = [e["params"] for e in log["events"] if e["type"] == start_job and "url" in e.get("params", {})]
    origin = cli_server.rstrip("/")
    by_page = {j["url"] for j in jobs if j.get("initiator") == origin}  # what the page's script and images asked
    assert sum(u.endswith("/thumbnail") for u in by_page) == 12 and origin + "/search" in by_page
    assert all(u.startswith(origin + "/") for u in by_page), sorted(by_page)
    assert cli_server + "?q=a+red+circle" in {j["url"] for j in jobs}  # the navigation itself


def test_command_refuses_a_busy_port_and_a_missing_index(trained_shapes_export, tmp_path):
    from click.testing import CliRunner

    from fuse.cli import cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", str(trained_shapes_export), "--port", str(port)])
    assert result.exit_code == 2 and f"--port {port}: cannot listen there" in result.output
    assert "--port 0" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["serve", str(trained_shapes_export), "--index", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "Index source not found" in result.output


def test_batcher_groups_by_key_and_a_failing_batch_fails_only_its_requests():
    from fuse.model.batcher import MicroBatcher

    calls = []

    def run(key, inputs):
        calls.append((key, list(inputs)))
        if key == ("bad",):
            raise ValueError("this batch failed")
        return [x * 10 for x in inputs]

    async def main():
        batcher = MicroBatcher(run, max_batch=4, wait_ms=50)
        asks = [batcher.submit(("bad",) if i % 3 == 2 else ("ok",), [i, i + 100] if i == 0 else [i])
                for i in range(7)]
        answers = await asyncio.gather(*asks, return_exceptions=True)
        await batcher.close()
        return answers, batcher.stats

    answers, stats = asyncio.run(main())
    assert answers[0] == [0, 1000] and answers[1] == [10] and answers[3] == [30] and answers[6] == [60]
    assert all(isinstance(answers[i], ValueError) for i in (2, 5))
    # a collection stops at 4 inputs over all keys (requests 0-2, then 3-6), each key one call per collection
    assert [(key, len(inputs)) for key, inputs in calls] == [(("ok",), 3), (("bad",), 1), (("ok",), 3), (("bad",), 1)]
    assert stats.requests == 5 and stats.batches == 2  # the failed batch answered no request
