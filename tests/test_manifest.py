"""Manifests: many-to-many pairs, de-duplication, and errors that name the record."""

from __future__ import annotations

import json

import pytest

from fuse.base.errors import DataError
from fuse.data.manifest import load_pairs


def _write(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def test_several_captions_and_one_record_per_pair_give_the_same_ground_truth(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"x")
    grouped = _write(tmp_path / "g.jsonl", [{"image": "a.png", "text": ["cat", "kitten"]},
                                            {"image": "b.png", "text": "dog"}])
    flat = _write(tmp_path / "f.jsonl", [{"image": "a.png", "text": "cat"}, {"image": "a.png", "text": "kitten"},
                                         {"image": "b.png", "text": "dog"}])
    g = load_pairs(grouped, ("image", "text"), ("image",))
    f = load_pairs(flat, ("image", "text"), ("image",))
    assert g.values == f.values
    assert g.values["image"] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert g.values["text"] == ["cat", "kitten", "dog"]
    assert g.pairs.tolist() == f.pairs.tolist() == [[0, 0], [0, 1], [1, 2]]
    assert (g.n_records, f.n_records) == (2, 3)


def test_missing_file_names_the_line(tmp_path):
    m = _write(tmp_path / "m.jsonl", [{"image": "nope.png", "text": "x"}])
    with pytest.raises(DataError, match=r"m.jsonl:1: image file not found: .*nope.png"):
        load_pairs(m, ("image", "text"), ("image",))


@pytest.mark.parametrize("line, message", [
    ("{not json", r"m.jsonl:2: not valid JSON"),
    ('["a", "b"]', r"m.jsonl:2: expected a JSON object, got list"),
    ('{"image": "a.png", "text": []}', r"m.jsonl:2: 'text' must be a non-empty string or list of strings"),
    ('{"image": "a.png", "text": 3}', r"m.jsonl:2: 'text' must be a non-empty string"),
])
def test_bad_records_name_the_line(tmp_path, line, message):
    (tmp_path / "a.png").write_bytes(b"x")
    m = _write(tmp_path / "m.jsonl", [{"image": "a.png", "text": "ok"}, line])
    with pytest.raises(DataError, match=message):
        load_pairs(m, ("image", "text"), ("image",))


def test_empty_and_missing_manifests(tmp_path):
    with pytest.raises(DataError, match="Manifest is empty"):
        load_pairs(_write(tmp_path / "e.jsonl", [""]), ("image", "text"))
    with pytest.raises(DataError, match="Manifest not found"):
        load_pairs(tmp_path / "absent.jsonl", ("image", "text"))


def test_unreadable_image_is_a_clear_error(tmp_path):
    import fuse

    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"Unreadable image .*bad.png"):
        fuse.input_kind("image").read(str(tmp_path / "bad.png"))


def test_records_lacking_a_modality_are_left_out_of_that_pair(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"x")
    m = _write(tmp_path / "m.jsonl", [{"image": "a.png", "text": "ok"}, {"image": "a.png"}, {"text": "only text"}])
    data = load_pairs(m, ("image", "text"), ("image",))
    assert (data.n_records, len(data)) == (1, 1) and data.values["text"] == ["ok"]
    assert "2 of 3 records lack image or text" in capsys.readouterr().out
    with pytest.raises(DataError, match=r"no record has both 'image' and 'audio' \(fields seen: image, text\)"):
        load_pairs(m, ("image", "audio"), ("image", "audio"))
