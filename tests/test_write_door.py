"""Every registered command, run for real under an audit hook, writes only what it claimed through the door
(``fuse.base.owned``): tests/write_door_walk.py runs them in a subprocess (an audit hook stays for the life of
its process) and lists any write to a path the door did not grant."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_every_command_writes_only_through_the_door(tmp_path, tiny_text_model, shapes_data):
    work = tmp_path / "work"
    work.mkdir()
    walk = Path(__file__).with_name("write_door_walk.py")
    proc = subprocess.run([sys.executable, str(walk), str(work), str(tiny_text_model),
                           str(Path(shapes_data["train"]).parent)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not report["failed"], report["failed"]
    assert set(report["walked"]) <= set(report["ran"]), "a registered command is not walked: " + \
        ", ".join(sorted(set(report["walked"]) - set(report["ran"])))
    assert report["violations"] == []


def test_the_hook_sees_a_write_the_door_did_not_grant(tmp_path):
    """The walk's own check can fail: a plain write beside a claimed folder is reported, the claimed one is not."""
    code = f"""
import sys, os
sys.path.insert(0, {str(Path(__file__).parent)!r})
from write_door_walk import writes
from fuse.base.owned import claim, granted
claim({str(tmp_path / 'mine')!r}, "eval", "--out")
seen = []
sys.addaudithook(lambda e, a: seen.extend(p for p in writes(e, a) if not granted(p)))
open({str(tmp_path / 'mine' / 'ok.txt')!r}, "w").close()
open({str(tmp_path / 'stray.txt')!r}, "w").close()
os.replace({str(tmp_path / 'stray.txt')!r}, {str(tmp_path / 'mine' / 'moved.txt')!r})
print(sorted(set(os.path.basename(p) for p in seen)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['stray.txt']"
