"""Remote tar shards against real servers started here (stdlib HTTP, moto's S3, pipe:cat): the same
pairs and latents as the shards on disk, faults survived or named in one line, a kill -9 resumed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe, write_shapes_manifest
from remote_servers import ShardServer
from safetensors.torch import load_file

from fuse import input_kind
from fuse.base.errors import DataError
from fuse.base.plugin_manager import registry
from fuse.cli import cli
from fuse.data.cache import EncodeOptions, cached_latents
from fuse.data.fetch import FetchOptions
from fuse.data.pack import pack_manifest
from fuse.data.shards import load_shard_pairs, shard_set

CPU = torch.device("cpu")
PAIR = ("image", "text")
FAST = FetchOptions(retries=2, timeout_s=1.0, backoff_s=0.01)
SECRET = "hunter2"


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """The shapes packed 8 keys a shard: 3 train shards and 1 val shard, and the server's view of them."""
    root = tmp_path_factory.mktemp("remote-shapes")
    splits = write_shapes_manifest(root)
    train = pack_manifest(splits["train"], root / "shards", 8)
    val = pack_manifest(splits["val"], root / "shards", 100)
    files = {f"/s/{p.name}": p.read_bytes() for p in [*train, *val]}
    return splits, train, val, files


def _kinds():
    return {"image": input_kind("image"), "text": input_kind("text")}


def _urls(server, names, auth=True):
    netloc = server.url.replace("http://", f"http://u:{SECRET}@" if auth else "http://")
    return [f"{netloc}/s/{n}?token={SECRET}" for n in names]


def _timm():
    torch.manual_seed(0)   # the same random weights in every process: the same latent store
    return registry("encoder").create("timm", {"model": "test_efficientnet", "pretrained": False})


def _rows(cache):
    """Every row of every latent store under ``cache``: (store, key) -> latent."""
    out = {}
    for rec in cache.glob("latent-store/*/shard-*.json"):
        keys = json.loads(rec.read_text())["keys"]
        for key, row in zip(keys, load_file(rec.with_suffix(".safetensors"))["latents"]):
            out[(rec.parent.name, key)] = row
    return out


def test_urls_braces_and_secrets_are_checked_before_anything_is_read():
    s = shard_set(f"https://u:{SECRET}@h.example/cc3m/{{00000..00002}}.tar?sig={SECRET}")
    assert s.paths[2] == f"https://u:{SECRET}@h.example/cc3m/00002.tar?sig={SECRET}"   # the real URL, for the request
    assert str(s) == "https://h.example/cc3m/{00000..00002}.tar" and SECRET not in str(s)
    assert shard_set(["s3://b/a.tar", "gs://b/c-{1..2}.tar"]).paths == ("s3://b/a.tar", "gs://b/c-1.tar",
                                                                       "gs://b/c-2.tar")
    bad = {"https://h/a-{5..1}.tar": "brace range {5..1} runs backwards",
           "s3://b/a-{000..002.tar": "malformed brace pattern",
           "https://h/a-{0..x}.tar": "malformed brace range {0..x}",
           f"https://u:{SECRET}@h:99999/a.tar": "https://h:99999/a.tar: malformed URL",
           "s3:///a.tar": "malformed URL: no host",
           "https://h/a.tar.gz": "compressed tar shards"}
    for spec, message in bad.items():
        with pytest.raises(DataError, match=message.replace("{", r"\{").replace(".", r"\.")) as err:
            shard_set(spec)
        assert SECRET not in str(err.value) and "\n" not in str(err.value)


def test_https_shards_give_the_pairs_of_the_local_ones_through_a_dropped_connection(packed, tmp_path, capsys):
    _, train, _, files = packed
    local = load_shard_pairs(shard_set([str(p) for p in train]), PAIR, _kinds(), tmp_path / "local")
    with ShardServer(files, auth=f"u:{SECRET}") as srv:
        srv.faults["/s/train-000001.tar"] = "drop-once"   # half the bytes, then the connection closes
        remote = load_shard_pairs(shard_set(_urls(srv, [p.name for p in train])), PAIR, _kinds(), tmp_path / "c",
                                  fetch=FAST)
        assert [r.split("?")[0] for r in srv.requests] == ["/s/train-000000.tar", "/s/train-000001.tar",
                                                           "/s/train-000001.tar", "/s/train-000002.tar"]
        again = load_shard_pairs(shard_set(_urls(srv, [p.name for p in train])), PAIR, _kinds(), tmp_path / "c")
        assert len(srv.requests) == 4                     # indexed once: the next load reads nothing remote
    assert remote.values["text"] == local.values["text"] == again.values["text"]
    assert remote.pairs.tolist() == local.pairs.tolist()
    assert remote.values["image"][0].startswith(f"{srv.url}/s/train-000000.tar#")   # redacted: no userinfo, no query
    written = [p.read_text() for p in (tmp_path / "c").rglob("*") if p.is_file()]
    assert written and not any(SECRET in w for w in written) and SECRET not in capsys.readouterr().out
    assert not list((tmp_path / "c" / "remote-spool").iterdir())   # no shard kept on disk


def _one_line_error(shards, cache, fetch) -> tuple[str, float]:
    t0 = time.monotonic()
    with pytest.raises(DataError) as err:
        load_shard_pairs(shards, PAIR, _kinds(), cache, fetch=fetch)
    message = str(err.value)
    assert "\n" not in message and SECRET not in message
    return message, time.monotonic() - t0


def test_faults_retry_then_stop_or_skip_with_one_line_each(packed, tmp_path, capsys):
    _, train, _, files = packed
    names = [p.name for p in train]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]               # nothing listens there once the socket is closed
    with ShardServer({**files, "/s/junk.tar": b"not a tar at all " * 200}) as srv:
        srv.faults.update({"/s/train-000001.tar": "404"})
        message, _ = _one_line_error(shard_set(_urls(srv, names, auth=False)), tmp_path / "a", FAST)
        assert message == f"{srv.url}/s/train-000001.tar: HTTP 404 Not Found"
        skipped = load_shard_pairs(shard_set(_urls(srv, names, auth=False)), PAIR, _kinds(), tmp_path / "a",
                                   fetch=FetchOptions(retries=0, on_error="skip"))
        assert len(skipped) == 16 and "skipped 1 of 3 shard(s)" in capsys.readouterr().out
        srv.faults.update({"/s/train-000001.tar": "stall", "/s/train-000002.tar": "drop"})
        stall = FetchOptions(retries=1, timeout_s=0.5, backoff_s=0.01)
        message, took = _one_line_error(shard_set(_urls(srv, names[1:2])), tmp_path / "b", stall)
        assert "train-000001.tar: unreadable after 2 attempts (" in message and "timed out" in message
        assert 0.9 < took < 5
        message, _ = _one_line_error(shard_set(_urls(srv, names[2:])), tmp_path / "b", FAST)
        assert "train-000002.tar: unreadable after 3 attempts" in message and "ended after" in message
        message, _ = _one_line_error(shard_set(f"{srv.url}/s/junk.tar"), tmp_path / "b", FAST)
        assert message.startswith(f"Shard {srv.url}/s/junk.tar is truncated or not an uncompressed tar")
    message, _ = _one_line_error(shard_set(f"http://127.0.0.1:{closed}/s/a.tar"), tmp_path / "b", FAST)
    assert message.startswith(f"http://127.0.0.1:{closed}/s/a.tar: unreadable after 3 attempts")
    assert "refused" in message
    assert not list((tmp_path / "b").glob("remote-index/*.json")) and not list((tmp_path / "b").glob("remote-spool/*"))


def test_a_shard_changed_between_two_encodes_is_refused_and_nothing_mixed(packed, tmp_path):
    _, train, val, files = packed
    enc, cache = _timm(), tmp_path / "c"
    with ShardServer(files) as srv:
        urls = [f"{srv.url}/s/{p.name}" for p in train[:2]]
        data = load_shard_pairs(shard_set(urls), PAIR, _kinds(), cache)
        cached_latents(enc, {"name": "timm"}, data.values["image"], cache, CPU, EncodeOptions(label="i", verbose=False))
        srv.files["/s/train-000001.tar"] = files[f"/s/{val[0].name}"]    # replaced on the server
        with pytest.raises(DataError, match=f"Shard {srv.url}/s/train-000001.tar changed since fuse indexed it"):
            cached_latents(enc, {"name": "timm"}, data.values["image"], cache, CPU,   # another store: read again
                           EncodeOptions(label="i", dtype="float16", verbose=False))
        fp16 = [k for (store, k) in _rows(cache) if store in _stores(cache, "float16")]
        first = load_shard_pairs(shard_set(urls[:1]), PAIR, _kinds(), cache)
        assert len(fp16) == len(first.values["image"])   # only the unchanged shard's members, whole
        fresh = load_shard_pairs(shard_set(urls), PAIR, _kinds(), cache)    # indexed again: the new version
        assert len(fresh.pairs) == len(data.pairs) + 4      # 12 val keys in place of 8 train keys
        cached_latents(enc, {"name": "timm"}, fresh.values["image"], cache, CPU,
                       EncodeOptions(label="i", dtype="float16", verbose=False))


def _stores(cache, dtype):
    return {p.parent.name for p in cache.glob("latent-store/*/store.json")
            if json.loads(p.read_text())["identity"]["dtype"] == dtype}


@pytest.fixture(scope="module")
def s3(packed):
    """moto's S3 server on 127.0.0.1 holding the shards in bucket `shards`, reached by the real s3fs."""
    fsspec = pytest.importorskip("fsspec")
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                         "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
                mp.setenv(k, v)
            endpoint = "http://127.0.0.1:%d" % server.get_host_and_port()[1]
            mp.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})  # as FSSPEC_S3_ENDPOINT_URL sets it
            fs = fsspec.filesystem("s3", skip_instance_cache=True)
            fs.mkdir("shards")
            for name, data in packed[3].items():
                fs.pipe(f"shards/{name.rsplit('/', 1)[1]}", data)
            yield endpoint
    finally:
        server.stop()


def test_s3_without_credentials_is_one_line_and_gs_names_its_extra(s3, packed, tmp_path, monkeypatch):
    import s3fs

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    s3fs.S3FileSystem.clear_instance_cache()
    message, _ = _one_line_error(shard_set("s3://shards/train-000000.tar"), tmp_path, FAST)
    assert message.startswith("s3://shards/train-000000.tar: no credentials found")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        message, _ = _one_line_error(shard_set("gs://bucket/a-{0..1}.tar"), tmp_path, FAST)
        assert message.startswith("gs://bucket/a-0.tar: gs:// needs a client") and "fuse-align[gcs]" in message


def test_training_from_s3_https_and_pipe_equals_training_from_disk(packed, s3, tmp_path, tiny_text_model):
    splits, train, val, files = packed
    pattern = "train-{000000..000002}.tar"
    runs = {}
    with ShardServer(files, auth=f"u:{SECRET}") as srv:
        https = _urls(srv, [pattern])[0]
        sources = {"disk": (str(train[0].parent / pattern), str(val[0])),
                   "https": (https, f"pipe:cat {val[0]}"),
                   "s3": (f"s3://shards/{pattern}", f"s3://shards/{val[0].name}")}
        for name, (tr, va) in sources.items():
            r = tiny_recipe(tmp_path, tiny_text_model, splits, output_dir=str(tmp_path / name),
                            **{"train.epochs": 1, "train.log_every": 1,
                               "data.cache_dir": str(tmp_path / f"cache-{name}")})
            result = CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / f"{name}.yaml", r)),
                                              f"data.train={tr}", f"data.val={va}"])
            assert result.exit_code == 0, result.output
            rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            runs[name] = ([{k: v for k, v in row.items() if k != "samples_per_s"} for row in rows],
                          (tmp_path / name / "checkpoints" / "best.safetensors").read_bytes())
            assert SECRET not in (tmp_path / name / "recipe.yaml").read_text() + result.output
        seen = len(srv.requests)
        assert sorted(r.split("?")[0] for r in srv.requests) == [f"/s/{p.name}" for p in train]   # each read once
        again = CliRunner().invoke(cli, ["train", str(tmp_path / "https.yaml"), f"data.train={https}", "data.val=null",
                                         f"output_dir={tmp_path / 'again'}", "train.max_steps=1"])
        assert again.exit_code == 0, again.output
        assert len(srv.requests) == seen                 # trained from the latent store: nothing remote read
    assert runs["https"] == runs["disk"] and runs["s3"] == runs["disk"]
    latents = {name: _rows(tmp_path / f"cache-{name}") for name in sources}
    assert latents["disk"].keys() == latents["https"].keys() == latents["s3"].keys()
    assert all(torch.equal(latents["disk"][k], latents[n][k]) for n in ("https", "s3") for k in latents["disk"])


def test_a_recipe_file_never_runs_a_command(packed, tmp_path, tiny_text_model):
    splits, train, _, _ = packed
    from fuse.recipes.recipe import load_recipe

    r = tiny_recipe(tmp_path, tiny_text_model, splits, **{"data.train": f"pipe:cat {train[0]}", "data.val": None})
    path = write_recipe(tmp_path / "r.yaml", r)
    result = CliRunner().invoke(cli, ["train", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"error: data.train: pipe:cat {train[0]} runs a command, and a recipe file never runs one" in result.output
    assert not (tmp_path / "cache" / "remote-index").exists()
    assert load_recipe(path, allow_pipe=True).allows(f"pipe:cat {train[0]}")          # fuse train --allow-pipe
    assert load_recipe(path, [f"data.train=pipe:cat {train[1]}"]).allows(f"pipe:cat {train[1]}")
    assert not load_recipe(path, ["data.val=null"]).allows(f"pipe:cat {train[0]}")


ENCODE = """
import sys
from pathlib import Path
import torch
from fuse import input_kind
from fuse.base.plugin_manager import registry
from fuse.data.cache import EncodeOptions, cached_latents
from fuse.data.fetch import FetchOptions
from fuse.data.shards import load_shard_pairs, shard_set
cache, urls = Path(sys.argv[1]), sys.argv[2:]
kinds = {"image": input_kind("image"), "text": input_kind("text")}
data = load_shard_pairs(shard_set(urls), ("image", "text"), kinds, cache, fetch=FetchOptions(timeout_s=60))
torch.manual_seed(0)
enc = registry("encoder").create("timm", {"model": "test_efficientnet", "pretrained": False})
cached_latents(enc, {"name": "timm"}, data.values["image"], cache, torch.device("cpu"),
               EncodeOptions(batch_size=2, shard_rows=4, verbose=False))
"""


def test_kill_9_during_a_remote_encode_resumes_to_a_clean_runs_store(packed, tmp_path):
    _, train, _, files = packed
    with ShardServer(files) as srv:
        urls = [f"{srv.url}/s/{p.name}" for p in train]
        load_shard_pairs(shard_set(urls), PAIR, _kinds(), tmp_path / "a")    # indexed: the child only encodes
        srv.faults["/s/train-000001.tar"] = "hold"       # the encode pass stops half-way through shard 1
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.Popen([sys.executable, "-c", ENCODE, str(tmp_path / "a"), *urls], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        while sum(r.startswith("/s/train-000001") for r in srv.requests) < 2:   # index, then the held encode read
            assert proc.poll() is None and time.monotonic() - t0 < 120
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        assert list((tmp_path / "a" / "remote-spool").iterdir())   # the half-read shard it left
        done = len(_rows(tmp_path / "a"))
        assert done == 8                                  # shard 0's members, whole; nothing of shard 1
        srv.faults.clear()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)   # as the child: the same kernels, so the same bits
        try:
            for cache in ("a", "b"):   # resume the killed store; encode a clean one
                data = load_shard_pairs(shard_set(urls), PAIR, _kinds(), tmp_path / cache)
                cached_latents(_timm(), {"name": "timm"}, data.values["image"], tmp_path / cache, CPU,
                               EncodeOptions(batch_size=2, shard_rows=4, verbose=False))
        finally:
            torch.set_num_threads(threads)
    resumed, clean = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert resumed.keys() == clean.keys() and len(clean) == 24
    assert all(torch.equal(resumed[k], clean[k]) for k in clean)
    assert not list((tmp_path / "a" / "remote-spool").iterdir())   # swept
