"""Folders and files fuse never turns against a user: an --index-dir, `fuse embed`'s outputs and
their resume folder are written only when fuse made them; pack and export loading stay inside."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from fuse.api.owned import owner
from fuse.cli import cli


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def photos(shapes_data, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(shapes_data["val"].parent / "img", folder)
    return folder


def search(export, photos, index_dir, *flags):
    return CliRunner().invoke(cli, ["search", str(export), "--index", str(photos), "--query", "a red circle",
                                    "--index-dir", str(index_dir), *flags])


def test_index_dir_that_is_a_users_folder_is_refused_and_kept(trained_shapes_export, photos, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "shard-00007.safetensors").write_bytes(b"my own file")
    (folder / "index.json").write_text(json.dumps({"my": "notes"}))
    before = snapshot(folder)
    for flags in ([], ["--rebuild"]):
        result = search(trained_shapes_export, photos, folder, *flags)
        assert result.exit_code == 2, result.output
        assert "is not a fuse index folder" in result.output.strip().splitlines()[-1]  # one line (after progress)
    assert snapshot(folder) == before


def test_index_update_deletes_only_shards_it_wrote(trained_shapes_export, photos, tmp_path):
    folder = tmp_path / "ix"
    assert search(trained_shapes_export, photos, folder).exit_code == 0
    assert owner(folder)["kind"] == "index"
    mine = folder / "shard-00042.safetensors"  # a user's file dropped into fuse's index folder
    mine.write_bytes(b"mine")
    stale = folder / ".index.json.fuse-tmp-dead.tmp"  # what a killed update leaves
    stale.write_text("{")
    for p in list(photos.glob("*.png"))[:3]:
        p.unlink()
    result = search(trained_shapes_export, photos, folder, "--rebuild")
    assert result.exit_code == 0, result.output
    assert mine.read_bytes() == b"mine" and not stale.exists()
    meta = json.loads((folder / "index.json").read_text())
    assert sorted(p.name for p in folder.glob("shard-*")) == sorted([*meta["shards"], mine.name])


def embed(export, folder, out):
    return CliRunner().invoke(cli, ["embed", str(export), "-m", "image", str(folder), "-o", str(out), "--no-cache"])


def test_embed_never_replaces_a_file_or_parts_folder_it_did_not_write(trained_shapes_export, photos, tmp_path):
    out = tmp_path / "thesis.safetensors"
    out.write_bytes(b"not embeddings")
    result = embed(trained_shapes_export, photos, out)
    assert result.exit_code == 2 and "not an embeddings file fuse embed wrote" in result.output
    assert out.read_bytes() == b"not embeddings"

    out = tmp_path / "e.safetensors"
    parts = tmp_path / "e.safetensors.parts"
    parts.mkdir()
    (parts / "draft.txt").write_text("mine")
    result = embed(trained_shapes_export, photos, out)
    assert result.exit_code == 2 and "not fuse embed's resume folder" in result.output
    assert (parts / "draft.txt").read_text() == "mine" and not out.exists()
    shutil.rmtree(parts)
    assert embed(trained_shapes_export, photos, out).exit_code == 0
    assert embed(trained_shapes_export, photos, out).exit_code == 0  # its own output it replaces
    assert not parts.exists()
