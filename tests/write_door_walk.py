"""Run every registered `fuse` command under an audit hook; print every write the door did not grant.

Run by tests/test_write_door.py in a subprocess (an audit hook cannot be removed once installed):

    python tests/write_door_walk.py WORK_DIR TEXT_MODEL SHAPES_DIR

WORK_DIR is an empty folder for the inputs and outputs. The commands are real, with tiny inputs: a
config-built BERT and timm EfficientNet, the rendered shapes of tests/conftest.py. The hook watches
``open`` in a write mode, ``os.rename``/``os.replace``, ``os.remove``/``os.unlink``, ``os.rmdir``,
``shutil.rmtree``, ``os.mkdir``, ``shutil.copyfile``/``shutil.move`` and ``tempfile.mkstemp``/``mkdtemp``
while a command runs, and records a path unless ``fuse.base.owned.granted(path)`` says fuse claimed it, or
it lies under a third-party library's own scratch (``LIBRARY_SCRATCH``, stated here).
The output is one JSON object: {"violations": [...], "ran": [...], "walked": [...], "failed": {...}}.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# event -> the positions of its arguments that name a path it changes
EVENTS = {"open": (0,), "os.rename": (0, 1), "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,),
          "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.move": (0, 1), "tempfile.mkstemp": (0,),
          "tempfile.mkdtemp": (0,), "os.truncate": (0,), "os.symlink": (1,), "os.link": (1,)}


def library_scratch(work: Path) -> tuple[str, ...]:
    """Where third-party libraries may write their own files: the process's temporary folder (wandb,
    tensorboard, torch stage files there), torch's compile cache (/tmp/torchinductor_<user> unless
    TORCHINDUCTOR_CACHE_DIR says), the Hugging Face, torch and matplotlib caches, bytecode caches, and
    /dev (null, shm)."""
    import getpass

    home = Path.home()
    inductor = os.environ.get("TORCHINDUCTOR_CACHE_DIR", f"/tmp/torchinductor_{getpass.getuser()}")
    return tuple(str(p) for p in (Path(tempfile.gettempdir()), Path(inductor), home / ".cache" / "huggingface",
                                  home / ".cache" / "torch", home / ".cache" / "matplotlib", home / ".config" / "matplotlib",
                                  Path(os.environ.get("MPLCONFIGDIR", home / ".config" / "matplotlib")),
                                  Path("/dev")))


def writes(event: str, args: tuple) -> list[str]:
    """The paths an audited call writes (none for a read-only open)."""
    if event not in EVENTS:
        return []
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None))[:3]
        if isinstance(mode, str):
            if not any(c in mode for c in "wax+"):
                return []
        elif not (isinstance(flags, int) and flags & WRITE_FLAGS):
            return []
        args = (path,)
    dir_fd = args[1] if event in ("os.remove", "os.rmdir", "os.mkdir") and len(args) > 1 else None
    if event == "os.mkdir" and len(args) > 2:
        dir_fd = args[2]
    if isinstance(dir_fd, int) and dir_fd >= 0:  # a name relative to an open folder (shutil.rmtree's walk)
        return [os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), os.fsdecode(args[0]))]
    return [os.fsdecode(args[i]) for i in EVENTS[event] if isinstance(args[i], (str, bytes, os.PathLike))]


def prepare(work: Path, text_model: str, shapes: Path) -> list[list[str]]:
    """Inputs, and one command line per registered command (a group's subcommands each)."""
    import shutil

    import yaml

    data = work / "data"
    shutil.copytree(shapes, data)
    tower = {"name": "hf-text", "options": {"model": text_model}}
    image = {"name": "timm", "options": {"model": "test_efficientnet", "pretrained": False}}
    recipe = {"name": "tiny", "seed": 0, "device": "cpu", "output_dir": str(work / "run"), "embed_dim": 16,
              "modalities": {"image": {"encoder": image, "head": {"name": "linear"}},
                             "text": {"encoder": tower, "head": {"name": "linear"}}},
              "objectives": [{"name": "infonce"}],
              "data": {"train": str(data / "train.jsonl"), "val": str(data / "val.jsonl"),
                       "cache_dir": str(work / "cache"), "encode_batch_size": 16},
              "train": {"batch_size": 8, "epochs": 1, "log_every": 2}}
    (work / "r.yaml").write_text(yaml.safe_dump(recipe))
    (work / "sweep.yaml").write_text(yaml.safe_dump({**recipe, "output_dir": str(work / "sweep")}))
    (work / "candidates.yaml").write_text(yaml.safe_dump({"candidates": {"image": [{"label": "e", **image}],
                                                                        "text": [{"label": "b", **tower}]}, "k": 3}))
    (work / "concepts.txt").write_text("red\ngreen\nblue\nyellow\n")
    for label in ("red", "blue"):
        (work / "classes" / label).mkdir(parents=True)
        for img in sorted((data / "img").glob(f"*-{label}-*.png"))[:2]:
            shutil.copyfile(img, work / "classes" / label / img.name)
    (work / "photos").mkdir()
    for img in sorted((data / "img").glob("val-*.png"))[:3]:
        shutil.copyfile(img, work / "photos" / img.name)
    run, export, cache = str(work / "run"), str(work / "run" / "export"), str(work / "cache")
    return [
        ["plugins"],
        ["train", str(work / "r.yaml"), "--tracker", "tensorboard"],
        ["plot", run],
        ["export", run, str(work / "export2")],
        ["eval", export, "--data", str(data / "val.jsonl"), "--out", str(work / "evalout")],
        ["report", run, "-o", str(work / "page.html"), "--samples", "2"],
        ["report", "--compare", run, run, "-o", str(work / "compare.html")],
        ["embed", export, "-m", "image", str(work / "photos"), "-o", str(work / "emb.safetensors"),
         "--cache-dir", cache],
        ["search", export, "--index", str(work / "photos"), "--query", "a red circle", "--k", "2"],
        ["serve", export, "--index", str(work / "photos"), "--port", str(_free_port())],
        ["select", str(work / "candidates.yaml"), "--data", str(data / "train.jsonl"), "--out", str(work / "selout"),
         "--device", "cpu", "--cache-dir", cache],
        ["curate", str(data / "train.jsonl"), "--concepts", str(work / "concepts.txt"), "--out",
         str(work / "curated.jsonl"), "--floor", "-1", "--encoder", json.dumps(tower), "--device", "cpu",
         "--cache-dir", cache],
        ["sweep", str(work / "sweep.yaml"), "--grid", "optim.lr=0.001"],
        ["data", "pack", str(data / "val.jsonl"), str(work / "shards")],
        ["data", "build", "folder", "--root", str(work / "classes"), "--cache-dir", cache],
    ]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_client(args: list[str]):
    """`fuse serve` runs until Ctrl-C: a thread asks it what a user would (health, model card, embed, search),
    then sends SIGINT, which the command ends on with exit 0. Only 127.0.0.1 is contacted."""
    import signal
    import threading
    import time
    import urllib.request

    url = f"http://127.0.0.1:{args[args.index('--port') + 1]}"

    def ask():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        for path, body in (("/model", None), ("/embed", {"modality": "text", "inputs": ["a red circle"]}),
                           ("/search", {"query": "a red circle", "k": 2})):
            data = json.dumps(body).encode() if body else None
            request = urllib.request.Request(url + path, data=data, headers={"content-type": "application/json"})
            try:
                urllib.request.urlopen(request, timeout=30).read()
            except OSError:
                pass
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    return thread


def walked() -> list[str]:
    """Every registered command: fuse.cli.BUILT_IN, a group's subcommands (`data pack`, `data build`)."""
    import click

    from fuse.cli import BUILT_IN, cli

    names = []
    for name in BUILT_IN:
        command = cli.get_command(None, name)
        if isinstance(command, click.Group):
            names += [f"{name} {sub}" for sub in command.list_commands(None)]
        else:
            names.append(name)
    return names


def main(work: Path, text_model: str, shapes: Path) -> dict:
    from click.testing import CliRunner

    from fuse.base import atomic
    from fuse.base.owned import granted
    from fuse.cli import cli

    commands = prepare(work, text_model, shapes)
    scratch = library_scratch(work)
    state = {"active": False, "violations": []}

    def hook(event, args):
        if not state["active"] or event not in EVENTS:
            return
        for path in writes(event, args):
            full = os.path.abspath(path)
            if full.endswith((".pyc", os.sep + "__pycache__")) or full.startswith(scratch) or \
                    granted(full, way=event == "os.mkdir"):
                continue
            state["violations"].append(f"{state['command']}: {event} {full}")

    sys.addaudithook(hook)
    ran, failed = [], {}
    for args in commands:
        state["command"] = " ".join(args[:2])
        atomic._GRANTED.clear()  # each command stands alone: what an earlier one claimed grants nothing
        state["active"] = True
        client = _serve_client(args) if args[0] == "serve" else None
        result = CliRunner().invoke(cli, args)
        state["active"] = False
        if client is not None:
            client.join()
        name = " ".join(args[:2]) if args[0] == "data" else args[0]
        ran.append(name)
        if result.exit_code != 0:
            failed[" ".join(args)] = result.output[-2000:] + repr(result.exception)
    return {"violations": sorted(set(state["violations"])), "ran": ran, "walked": walked(), "failed": failed}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))))
