"""Folders and files fuse never turns against a user: an --index-dir, `fuse embed`'s outputs and
their resume folder are written only when fuse made them; pack and export loading stay inside."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from fuse.base.owned import owner
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


# ---------------------------------------------------------------- nothing leaves through a side door

def test_pack_refuses_a_file_that_is_not_the_media_its_name_says(tmp_path, shapes_data):
    from fuse.data.pack import pack_manifest

    png = sorted((shapes_data["train"].parent / "img").glob("*.png"))[0]
    (tmp_path / "ok.png").write_bytes(png.read_bytes())
    (tmp_path / "secrets.png").write_text("AWS_SECRET_ACCESS_KEY=abc\n")
    (tmp_path / "notes.sensor").write_text("password: hunter2\n")  # a kind's own extension: text is no media
    for bad, line in (("secrets.png", 2), ("notes.sensor", 2)):
        records = [{"image": "ok.png", "text": "a"}, {"image": bad, "text": "b"}]
        (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        result = CliRunner().invoke(cli, ["data", "pack", str(tmp_path / "m.jsonl"), str(tmp_path / "out")])
        assert result.exit_code == 2, result.output
        assert f"m.jsonl:{line}: image file" in result.output and "is not a" in result.output
        assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    records = [{"image": "ok.png", "text": "a"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert pack_manifest(tmp_path / "m.jsonl", tmp_path / "out", 10)


def test_pack_checks_the_signature_not_the_content():
    """Only the first bytes decide (nothing is decoded), for every kind of media pack knows."""
    from fuse.data.sniff import HEAD, header_ok

    mp4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * (1 << 20)
    assert header_ok(mp4, "mp4") and not header_ok(mp4, "flac") and not header_ok(mp4, "png")
    assert header_ok(b"fLaC" + b"\xff" * HEAD, "flac") and header_ok(b"RIFF\x00\x00\x00\x00WAVEfmt ", "wav")
    assert not header_ok(b"RIFF\x00\x00\x00\x00WEBPVP8 ", "wav") and header_ok(b"\x93NUMPY\x01\x00", "npy")
    assert header_ok(b"\x00\x01\x02binary", "sensor") and not header_ok("caf\u00e9 text".encode(), "sensor")


@pytest.fixture
def export_copy(trained_shapes_export, tmp_path):
    out = tmp_path / "export"
    shutil.copytree(trained_shapes_export, out)
    return out


def edit_config(export: Path, change) -> None:
    cfg = json.loads((export / "fuse_model.json").read_text())
    change(cfg)
    (export / "fuse_model.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("where", ["../outside.safetensors", "ABS", "./../../../outside.safetensors"])
def test_export_loads_no_weights_from_outside_its_folder(export_copy, tmp_path, where):
    import fuse
    from fuse.base.errors import ModelFileError

    outside = tmp_path / "outside.safetensors"
    shutil.copyfile(export_copy / "image" / "encoder" / "model.safetensors", outside)
    value = str(outside) if where == "ABS" else where
    edit_config(export_copy, lambda c: c["modalities"]["image"]["encoder"]["options"].update(checkpoint=value))
    with pytest.raises(ModelFileError, match="points outside the export"):
        fuse.load(export_copy)


def test_export_loads_only_listed_files(export_copy, tmp_path):
    import fuse
    from fuse.base.errors import ModelFileError

    (export_copy / "image" / "encoder" / "extra.safetensors").write_bytes(
        (export_copy / "image" / "encoder" / "model.safetensors").read_bytes())
    edit_config(export_copy, lambda c: c["modalities"]["image"]["encoder"]["options"].update(
        checkpoint="./extra.safetensors"))
    with pytest.raises(ModelFileError, match="files list does not record"):
        fuse.load(export_copy)


def test_export_files_list_cannot_name_a_path_outside(export_copy, tmp_path):
    import fuse
    from fuse.base.errors import ModelFileError

    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"x")
    edit_config(export_copy, lambda c: c["files"].update({"../outside.safetensors": {"size": 1, "sha256": "0"}}))
    with pytest.raises(ModelFileError, match="outside the export"):
        fuse.load(export_copy)
    (export_copy / "image" / "head.safetensors").unlink()
    (export_copy / "image" / "head.safetensors").symlink_to(outside)  # a link out of the folder
    edit_config(export_copy, lambda c: c["files"].pop("../outside.safetensors"))
    with pytest.raises(ModelFileError, match="outside the export"):
        fuse.load(export_copy)
