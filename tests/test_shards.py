"""Tar shards as data: `fuse data pack` a manifest, then train from the shards exactly as from it."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe, write_shapes_manifest

from fuse.cli import cli
from fuse.data.shards import expand_braces


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """Shapes with two captions per image (a caption list must survive packing), packed 10 keys a shard."""
    root = tmp_path_factory.mktemp("shapes2")
    splits = write_shapes_manifest(root, copies=2, captions_per_image=2)
    patterns = {}
    for split, manifest in splits.items():
        result = CliRunner().invoke(cli, ["data", "pack", str(manifest), str(root / "shards"), "--shard-size", "10"])
        assert result.exit_code == 0, result.output
        patterns[split] = result.output.split(": ", 1)[1].strip()
    return splits, patterns


def test_brace_patterns_expand_like_webdataset():
    assert expand_braces("a-{08..10}.tar") == ["a-08.tar", "a-09.tar", "a-10.tar"]
    assert expand_braces("{x,y}-{1..2}.tar") == ["x-1.tar", "x-2.tar", "y-1.tar", "y-2.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_pack_writes_webdataset_members_deterministically(packed, tmp_path):
    splits, patterns = packed
    assert patterns["train"].endswith("train-{000000..000002}.tar")  # 24 records, 10 a shard
    with tarfile.open(patterns["train"].replace("{000000..000002}", "000000")) as tar:
        names = tar.getnames()
        assert names[:3] == ["000000000.png", "000000000.txt", "000000000.json"]
        assert json.loads(tar.extractfile("000000000.json").read())["text"] == ["a red circle", "circle coloured red"]
    again = CliRunner().invoke(cli, ["data", "pack", str(splits["train"]), str(tmp_path), "--shard-size", "10"])
    for name in ("train-000000.tar", "train-000002.tar"):
        assert (tmp_path / name).read_bytes() == (splits["train"].parent / "shards" / name).read_bytes()
    assert again.exit_code == 0
    refused = CliRunner().invoke(cli, ["data", "pack", str(splits["train"]), str(tmp_path)])
    assert refused.exit_code == 2 and "--force" in refused.output


@pytest.mark.parametrize("online", [False, True], ids=["cached-latents", "online-image-2-workers"])
def test_training_from_shards_equals_training_from_the_manifest(packed, tmp_path, tiny_text_model, online):
    splits, patterns = packed
    changes = {"train.epochs": 2, "train.log_every": 1}
    if online:
        changes.update({"modalities.image.encoder.frozen": False, "data.num_workers": 2, "train.epochs": 1})
    runs = {}
    for name, data in (("manifest", {k: str(v) for k, v in splits.items()}), ("shards", patterns)):
        r = tiny_recipe(tmp_path, tiny_text_model, splits, **changes, output_dir=str(tmp_path / name),
                        **{"data.train": data["train"], "data.val": data["val"]})
        result = CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / f"{name}.yaml", r))])
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs[name] = ([{k: v for k, v in row.items() if k != "samples_per_s"} for row in rows],
                      (tmp_path / name / "checkpoints" / "best.safetensors").read_bytes())
    assert runs["shards"] == runs["manifest"]


def _shard(path, members: dict[str, bytes]):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _train(tmp_path, tiny_text_model, shapes_data, train, **changes):
    r = tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{"data.train": train, "data.val": None, **changes})
    return CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / "r.yaml", r))])


def test_a_key_with_an_image_but_no_caption_is_one_line_naming_shard_and_key(tmp_path, tiny_text_model, shapes_data):
    png = next((shapes_data["train"].parent / "img").glob("train-*.png")).read_bytes()
    members = {f"k{i}.{ext}": (png if ext == "png" else f"caption {i}".encode())
               for i in range(4) for ext in ("png", "txt")}
    members["lonely.png"] = png
    _shard(tmp_path / "s-0.tar", members)
    result = _train(tmp_path, tiny_text_model, shapes_data, str(tmp_path / "s-0.tar"))
    assert result.exit_code == 2
    assert f"Shard {tmp_path / 's-0.tar'}: key lonely has image but no text" in result.output
    assert "data.bad_media: skip" in result.output and "Traceback" not in result.output
    skipped = _train(tmp_path, tiny_text_model, shapes_data, str(tmp_path / "s-0.tar"), **{"data.bad_media": "skip",
                                                                                             "train.epochs": 1})
    assert skipped.exit_code == 0, skipped.output
    assert "left out 1 key(s)" in skipped.output and "train: 4 image-text" in skipped.output


def test_a_truncated_shard_is_one_line_naming_it(packed, tmp_path, tiny_text_model, shapes_data):
    whole = packed[1]["train"].replace("{000000..000002}", "000001")
    cut = tmp_path / "cut-000000.tar"
    data = open(whole, "rb").read()
    cut.write_bytes(data[:len(data) // 2])
    result = _train(tmp_path, tiny_text_model, shapes_data, [str(cut), whole])
    assert result.exit_code == 2, result.output
    assert f"Shard {cut} is truncated" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_record_with_several_images_packs_to_the_same_pairs(tmp_path, shapes_data):
    from fuse import input_kind
    from fuse.data.manifest import load_pairs
    from fuse.data.pack import pack_manifest
    from fuse.data.shards import load_shard_pairs, shard_set

    pngs = sorted(p.name for p in (shapes_data["train"].parent / "img").glob("train-*.png"))[:5]
    for name in pngs:
        (tmp_path / name).write_bytes((shapes_data["train"].parent / "img" / name).read_bytes())
    records = [{"image": pngs[:3], "text": ["one", "two"]}, {"image": pngs[3], "text": "three"},
               {"image": pngs[4], "text": "two"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    paths = pack_manifest(tmp_path / "m.jsonl", tmp_path / "out", shard_size=2)
    assert [p.name for p in paths] == ["m-000000.tar", "m-000001.tar", "m-000002.tar"]  # 5 keys, 2 a shard
    kinds = {"image": input_kind("image"), "text": input_kind("text")}
    a = load_pairs(tmp_path / "m.jsonl", ("image", "text"), ("image",))
    b = load_shard_pairs(shard_set([str(p) for p in paths]), ("image", "text"), kinds, tmp_path / "cache")
    # each caption is its own item: the last record's "two" is not the first record's (whose three images share it)
    assert b.values["text"] == a.values["text"] == ["one", "two", "three", "two"]
    assert b.pairs.tolist() == a.pairs.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1], [3, 2], [4, 3]]
    first = kinds["image"].read(b.values["image"][4])
    assert first.tobytes() == kinds["image"].read(a.values["image"][4]).tobytes()
