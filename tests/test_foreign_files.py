"""Every registered dataset builder that reads a user's root declares the files it reads and their schemas
(``DatasetBuilder.foreign_files``); bad inputs are derived from each schema (each field missing, each field
of a wrong type, Latin-1 bytes) and each must be one line naming the file and the field, never a traceback.
A builder registered tomorrow is walked too: without a declaration and a fixture writer here, it fails."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

import dataset_fixtures as fx
import suite_fixtures as sf
import fuse
from fuse.base.plugin_manager import registry
from fuse.data.datasets import DatasetBuilder, build_dataset

# builder name -> (fixture writer, options) roots; each declared foreign file must be in one of them
FIXTURES = {
    "coco": [(fx.write_coco, {}), (fx.write_coco2017, {"annotations": "2017"})],
    "flickr30k": [(fx.write_flickr, {})],
    "audiocaps": [(fx.write_audiocaps, {})],
    "clotho": [(fx.write_clotho, {})],
    "msrvtt": [(fx.write_msrvtt, {})],
    "img2dataset": [(fx.write_img2dataset_files, {})],
    "imagenet": [(lambda root: fx.write_imagenet(root, "solution"), {})],
    "esc50": [(fx.write_esc50, {})],
    "folder": [],
    **{name: [] for name in ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r")},   # folder names only
}


def _suite_fixtures() -> dict:
    """The zero-shot suite's sets: torchvision's layout and CoOp's split file (tests/suite_fixtures.py)."""
    from fuse.plugins.datasets.suite import SETS

    def coop(spec):
        return lambda root: sf.coop(root, spec.tv or spec.name, *spec.coop, spec.name)

    def binary(name, side):
        return lambda root: getattr(sf, f"{name}_binary")(root, *sf.cifar_arrays(4, 4, side))

    out = {name: ([(getattr(sf, name), {})] if spec.tv and name != "caltech101" else [])
           + ([(coop(spec), {})] if spec.coop and name != "caltech101" else []) for name, spec in SETS.items()}
    out["caltech101"] = [(lambda root: sf.caltech101(root, coop=True) / "caltech-101", {})]
    return {**out, "cifar10": [(binary("cifar10", 32), {})], "cifar100": [(binary("cifar100", 32), {})],
            "stl10": [(binary("stl10", 96), {})]}


FIXTURES.update(_suite_fixtures())
WRONG = {"json": [{"not": "this"}, "not-a-number", 12345], "csv": ["not-a-number", "-1"]}


def reads_a_root(cls) -> bool:
    return cls.local_inputs.__func__ is not DatasetBuilder.local_inputs.__func__


def root_builders() -> list[str]:
    return [n for n in registry("dataset").names() if reads_a_root(registry("dataset").get(n).cls)]


def fixtures(name: str) -> list:
    """FIXTURES' roots for a builder, else dataset_fixtures.write_<name> (a new builder's writer, by name)."""
    writer = getattr(fx, "write_" + name.replace("-", "_"), None)
    return FIXTURES.get(name, [(writer, {})] if writer else [])


def test_every_builder_of_a_root_declares_its_foreign_files_and_a_fixture():
    for name in root_builders():
        cls = registry("dataset").get(name).cls
        assert cls.foreign_files is not None, f"{name}: declare foreign_files (the files of the root it reads)"
        assert name in FIXTURES or fixtures(name), (f"{name}: add write_{name.replace('-', '_')}(root) to "
                                                    "tests/dataset_fixtures.py (or an entry to FIXTURES here)")


def _cases():
    for name in root_builders():
        for n, ff in enumerate(registry("dataset").get(name).cls.foreign_files or ()):
            yield pytest.param(name, n, id=f"{name}-{ff.path}-{ff.records or 'rows'}")


def _load(path: Path, ff):
    fmt = ff.format
    if fmt == "json":
        return json.loads(path.read_text())
    if fmt == "lines":   # as fuse.foreign.read_rows splits them
        fields = list(ff.record.model_fields)
        lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        return {"fields": fields, "rows": [dict(zip(fields, line.split(None, len(fields) - 1))) for line in lines]}
    with path.open(newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
        return {"fields": reader.fieldnames, "rows": list(reader)}


def _dump(path: Path, fmt: str, data, encoding: str = "utf-8") -> None:
    if fmt == "json":
        path.write_bytes(json.dumps(data, ensure_ascii=False).encode(encoding))
        return
    if fmt == "lines":
        text = "".join(" ".join(row[f] for f in data["fields"]) + "\n" for row in data["rows"])
        path.write_bytes(text.encode(encoding))
        return
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=data["fields"], delimiter="\t" if fmt == "tsv" else ",")
    writer.writeheader()
    writer.writerows(data["rows"])
    path.write_bytes(out.getvalue().encode(encoding))


def _first(data, ff):
    """The first record of the file (a dict the mutation edits in place)."""
    return data["rows"][0] if ff.format != "json" else data[ff.records][0] if ff.records else data


def _key(record, ff, field: str):
    """A field's key in a record: its name, or its position where a json record is a list (CoOp's rows)."""
    return list(ff.record.model_fields).index(field) if isinstance(record, list) else field


def _fields(record, ff) -> dict:
    return dict(zip(ff.record.model_fields, record)) if isinstance(record, list) else record


def _set(data, ff, field: str, value) -> None:
    record = _first(data, ff)
    record[_key(record, ff, field)] = value


def _drop(data, ff, field: str) -> None:
    """The field gone from the first record (json) or the column gone from the file (csv, lines)."""
    if ff.format == "json":
        record = _first(data, ff)
        record.pop(_key(record, ff, field))
    else:
        data["fields"].remove(field)
        for row in data["rows"]:
            row.pop(field)


def _mutations(data, ff):
    """(what, field, mutate(data), encoding) derived from the schema: each field missing, each field wrong."""
    first = _fields(_first(data, ff), ff)
    last = list(ff.record.model_fields)[-1]
    for field, info in ff.record.model_fields.items():
        # a line's fields are positional: only its last can be missing, and a line of one field is never short
        if info.is_required() and (ff.format != "lines" or (field == last and len(ff.record.model_fields) > 1)):
            yield "missing", field, lambda d, f=field: _drop(d, ff, f), "utf-8"
        for bad in WRONG["json" if ff.format == "json" else "csv"]:
            try:
                ff.record.model_validate({**first, field: bad})
            except Exception:
                yield "wrong type", field, lambda d, f=field, b=bad: _set(d, ff, f, b), "utf-8"
                break
        if (info.json_schema_extra or {}).get("media_path"):
            for outside in ("../../../private/secret.wav", "/private/secret.wav"):
                yield "outside the root", "outside", lambda d, f=field, o=outside: _set(d, ff, f, o), "utf-8"
    text = next(f for f, v in first.items() if isinstance(v, str) and f in ff.record.model_fields)
    yield "Latin-1", "UTF-8", lambda d: _set(d, ff, text, _fields(_first(d, ff), ff)[text] + "_caf\u00e9"), "latin-1"
    if ff.format == "json" and not ff.records:
        yield "a list", "dict", lambda d: None, "list"


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    made = {}

    def get(name: str, ff) -> tuple[Path, dict]:
        for k, (writer, options) in enumerate(fixtures(name)):
            if (name, k) not in made:
                made[name, k] = writer(tmp_path_factory.mktemp(f"{name}{k}") / "root")
            if sorted(made[name, k].glob(ff.path)):
                return made[name, k], options
        raise AssertionError(f"{name}: no fixture in FIXTURES writes {ff.path}")

    return get


@pytest.mark.parametrize("name,n", list(_cases()))
def test_bad_inputs_derived_from_each_schema_are_one_line(name, n, roots, tmp_path):
    ff = registry("dataset").get(name).cls.foreign_files[n]
    root, options = roots(name, ff)
    path = sorted(root.glob(ff.path))[0]
    original = path.read_bytes()
    build_dataset(name, {"root": str(root), **options}, tmp_path / "ok", force=True)   # the fixture is valid
    try:
        for k, (what, field, mutate, encoding) in enumerate(_mutations(_load(path, ff), ff)):
            data = _load(path, ff)
            mutate(data)
            _dump(path, ff.format, [data] if encoding == "list" else data,
                  "utf-8" if encoding == "list" else encoding)
            with pytest.raises(fuse.DataError) as caught:
                build_dataset(name, {"root": str(root), **options}, tmp_path / f"c{k}", force=True)
            message = str(caught.value)
            assert "\n" not in message and path.name in message and field in message, (what, field, message)
            path.write_bytes(original)
    finally:
        path.write_bytes(original)
