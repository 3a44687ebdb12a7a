"""The bad-input matrix of docs/reliability.md: every row is run here through the CLI and must give one
`error:` line, exit code 2, no traceback, and leave the existing run, its export and every other folder as
they were (no temporary files either). The table in the docs is generated from ROWS (see the last test)."""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe

from fuse.cli import cli

R = ["train", "{recipe}"]  # the tiny recipe, writing to a fresh output_dir


@dataclass
class Row:
    input: str          # what the user typed or had (the docs' first column)
    args: list[str]     # the command, with {placeholders} filled by the fixture
    expect: str         # a part of the one-line message
    kept: str = "nothing written"
    enospc: bool = False  # inject "no space left on device" into the write helper

    @property
    def id(self) -> str:
        return self.input


ROWS = [
    # -- recipe values: refused by the schema or the plan before anything runs
    Row("optim.betas=[2,3]", R + ["optim.betas=[2,3]"], "each beta must be in [0, 1)"),
    Row("optim.eps=-1", R + ["optim.eps=-1"], "optim.eps: Input should be greater than 0"),
    Row("optim.eps=0", R + ["optim.eps=0"], "optim.eps: Input should be greater than 0"),
    Row("optim.lr=0", R + ["optim.lr=0"], "optim.lr: Input should be greater than 0"),
    Row("optim.weight_decay=-0.1", R + ["optim.weight_decay=-0.1"], "optim.weight_decay"),
    Row("optim.grad_clip=0", R + ["optim.grad_clip=0"], "optim.grad_clip"),
    Row("optim.betas=[0.9]", R + ["optim.betas=[0.9]"], "optim.betas"),
    Row("eval.ks=[0,-1]", R + ["eval.ks=[0,-1]"], "eval.ks: Value error, give distinct positive ranks"),
    Row("eval.ks=[]", R + ["eval.ks=[]"], "give distinct positive ranks"),
    Row("eval.ks=[5,5]", R + ["eval.ks=[5,5]"], "give distinct positive ranks"),
    Row("train.best_metric=accuracy", R + ["train.best_metric=accuracy"],
        "train.best_metric: 'accuracy' is not a validation metric of this recipe; use one of mean/R@1"),
    Row("train.best_metric=mean/R@3 (K not in eval.ks)", R + ["train.best_metric=mean/R@3"],
        "'mean/R@3' is not a validation metric"),
    Row("train.best_metric=audio_to_text/R@1 (pair not trained)", R + ["train.best_metric=audio_to_text/R@1"],
        "'audio_to_text/R@1' is not a validation metric"),
    Row("train.on_nonfinite=ignore", R + ["train.on_nonfinite=ignore"], "train.on_nonfinite: Input should be 'stop' or"),
    Row("train.export_on_failure=maybe", R + ["train.export_on_failure=maybe"], "train.export_on_failure"),
    Row("train.batch_size=1", R + ["train.batch_size=1"], "train.batch_size: Input should be greater than 1"),
    Row("train.epochs=0", R + ["train.epochs=0"], "train.epochs"),
    Row("train.max_steps=0", R + ["train.max_steps=0"], "train.max_steps"),
    Row("train.grad_accum=0", R + ["train.grad_accum=0"], "train.grad_accum"),
    Row("train.precision=fp8", R + ["train.precision=fp8"], "train.precision"),
    Row("train.log_every=0", R + ["train.log_every=0"], "train.log_every"),
    Row("train.keep_checkpoints=0", R + ["train.keep_checkpoints=0"], "train.keep_checkpoints"),
    Row("train.epoch=[audio,text]", R + ["train.epoch=[audio,text]"], "train.epoch: ['audio', 'text'] is not a pair"),
    Row("embed_dim=0", R + ["embed_dim=0"], "embed_dim: Input should be greater than 0"),
    Row("schedule.min_lr_ratio=2", R + ["schedule.min_lr_ratio=2"], "schedule.min_lr_ratio"),
    Row("schedule.warmup_steps=-1", R + ["schedule.warmup_steps=-1"], "schedule.warmup_steps"),
    Row("data.encode_batch_size=0", R + ["data.encode_batch_size=0"], "data.encode_batch_size"),
    Row("data.num_workers=-1", R + ["data.num_workers=-1"], "data.num_workers"),
    Row("data.bad_media=ignore", R + ["data.bad_media=ignore"], "data.bad_media"),
    Row("objectives=[]", R + ["objectives=[]"], "at least one objective is needed"),
    Row("nosuch.key=1", R + ["nosuch.key=1"], "nosuch: unknown field"),
    Row("override without '=' (train.epochs)", R + ["train.epochs"], "must look like key.sub=value"),
    Row("modalities.image.encoder.name=dinov3", R + ["modalities.image.encoder.name=dinov3"],
        "Unknown encoder 'dinov3'"),
    Row("trainable without frozen: false", R + ["modalities.image.encoder.trainable=[x]"], "it needs frozen: false"),
    Row("train.fsdp with fp16", R + ["train.fsdp=true", "train.precision=fp16"], "use precision bf16"),
    # -- recipe and manifest files
    Row("recipe file missing", ["train", "{tmp}/missing.yaml"], "Recipe file not found"),
    Row("recipe with a non-UTF-8 byte", ["train", "{bad_utf8_recipe}"], "line 2, byte offset 24: byte 0xff is not UTF-8"),
    Row("recipe that is not YAML", ["train", "{bad_yaml}"], "invalid YAML (line 2"),
    Row("recipe that is a list", ["train", "{list_recipe}"], "a recipe is a YAML mapping"),
    Row("manifest caption with a non-UTF-8 byte", R + ["data.train={bad_utf8_manifest}"],
        "line 3, byte offset", "run dir: recipe.yaml only"),
    Row("manifest line that is not JSON", R + ["data.train={bad_json_manifest}"], ":2: not valid JSON",
        "run dir: recipe.yaml only"),
    Row("data.train names a missing file", R + ["data.train={tmp}/missing.jsonl"], "not found",
        "run dir: recipe.yaml only"),
    Row("tar shard with an image but no caption", R + ["data.train={lonely_shard}"],
        "key lonely has image but no text", "run dir: recipe.yaml only"),
    Row("truncated tar shard", R + ["data.train={cut_shard}"], "is truncated", "run dir: recipe.yaml only"),
    Row("eval --data with a non-UTF-8 byte", ["eval", "{export}", "--data", "{bad_utf8_manifest}"], "byte offset"),
    # -- model files
    Row("pkg:nosuch/x", R + ["modalities.text.encoder.options.model=pkg:nosuch/x"],
        "names the Python package 'nosuch', which is not installed", "run dir: recipe.yaml only"),
    Row("pkg:nosuch.sub/x (a dotted name)", R + ["modalities.text.encoder.options.model=pkg:nosuch.sub/x"],
        "pkg: names a top-level Python package", "run dir: recipe.yaml only"),
    Row("transformers dir with only pytorch_model.bin", R + ["modalities.text.encoder.options.model={pickle_dir}"],
        "holds only pickle weights (pytorch_model.bin)", "run dir: recipe.yaml only"),
    # -- the file system
    Row("output_dir is a file", R + ["output_dir={file}"], "is a file, not a folder", "the file"),
    Row("output_dir below a file", R + ["output_dir={file}/run"], "is a file, not a folder", "the file"),
    Row("output_dir not writable (/sys)", R + ["output_dir=/sys/fuse-run"], "Cannot write /sys/"),
    Row("disk full when the run starts", R, "No space left on device", "no partial file", enospc=True),
    # -- resume
    Row("--resume with embed_dim=32", R + ["output_dir={run}", "embed_dim=32", "--resume"],
        "embed_dim: 16 -> 32", "the run, untouched (recipe.yaml too)"),
    Row("--resume with optim.lr=0.1", R + ["output_dir={run}", "optim.lr=0.1", "--resume"],
        "optim.lr: 0.003 -> 0.1", "the run, untouched"),
    Row("--resume of a dir never trained", R + ["--resume"], "Nothing to resume"),
    Row("--resume with a corrupt checkpoint", R + ["output_dir={corrupt_run}", "train.epochs=2", "--resume"],
        "does not match its recorded content hash", "the run, untouched"),
    # -- export
    Row("export into a non-empty folder", ["export", "{run}", "{notes}"], "is not a fuse export", "notes.txt"),
    Row("export --force into a non-empty folder", ["export", "{run}", "{notes}", "--force"],
        "not a fuse export, so fuse will not replace it, even with --force", "notes.txt"),
    Row("export onto the run dir", ["export", "{run}", "{run}"], "Will not export into the run dir",
        "the run, untouched"),
    Row("export into the run's export/", ["export", "{run}", "{run}/export", "--force"],
        "Will not export into the run dir", "the run, untouched"),
    Row("export onto a previous export without --force", ["export", "{run}", "{export}"], "pass --force",
        "the old export"),
    Row("export onto a file", ["export", "{run}", "{file}"], "is not a folder", "the file"),
    Row("export of a folder that is not a run", ["export", "{tmp}/norun", "{tmp}/out"], "not a fuse run dir"),
    Row("export --checkpoint epoch-099", ["export", "{run}", "{tmp}/out", "--checkpoint", "epoch-099"],
        "available: best, epoch-001"),
    Row("export of a corrupt checkpoint", ["export", "{corrupt_run}", "{tmp}/out"],
        "does not match its recorded content hash"),
    Row("disk full during export", ["export", "{run}", "{tmp}/out"], "No space left on device",
        "no OUT, no temp folder", enospc=True),
    Row("disk full replacing an export", ["export", "{run}", "{export}", "--force"], "No space left on device",
        "the old export", enospc=True),
    # -- other commands
    Row("eval of a folder that is not a model", ["eval", "{tmp}/norun", "--data", "{bad_json_manifest}"],
        "is not a fuse model"),
    Row("plot of a folder that is not a run", ["plot", "{tmp}/norun"], "metrics.jsonl not found"),
    Row("data build of an unknown dataset", ["data", "build", "nosuch"], "nosuch"),
    Row("data build with a bad option", ["data", "build", "emoji", "-o", "max_items=0"], "max_items"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_text_model, shapes_data):
    """A trained run, its export, a corrupted copy, and the bad files the rows name."""
    tmp = tmp_path_factory.mktemp("bad")
    run_recipe = tiny_recipe(tmp, tiny_text_model, shapes_data, **{"train.epochs": 1})
    assert CliRunner().invoke(cli, ["train", str(write_recipe(tmp / "run.yaml", run_recipe))]).exit_code == 0
    assert CliRunner().invoke(cli, ["export", str(tmp / "run"), str(tmp / "export")]).exit_code == 0
    shutil.copytree(tmp / "run", tmp / "corrupt_run")
    for name in ("epoch-001", "best"):  # one flipped bit in the tensor data: safetensors still reads it
        ckpt = tmp / "corrupt_run" / "checkpoints" / f"{name}.safetensors"
        data = bytearray(ckpt.read_bytes())
        data[-2] ^= 0x40
        ckpt.write_bytes(bytes(data))
    (tmp / "notes").mkdir()
    (tmp / "notes" / "notes.txt").write_text("keep")
    (tmp / "file").write_text("a file")
    (tmp / "norun").mkdir()
    (tmp / "bad_utf8_recipe.yaml").write_bytes(b"name: tiny\nseed: 0 # caf\xff\n")
    (tmp / "bad_yaml.yaml").write_text("a: [1,\n")
    (tmp / "list_recipe.yaml").write_text("- 1\n- 2\n")
    lines = shapes_data["train"].read_bytes().splitlines(keepends=True)
    (tmp / "bad_utf8.jsonl").write_bytes(b"".join(lines[:2]) + lines[2].replace(b"a ", b"a \xe9 ", 1) +
                                         b"".join(lines[3:]))
    (tmp / "bad_json.jsonl").write_bytes(lines[0] + b"{not json\n")
    pickle_dir = tmp / "pickle_model"
    shutil.copytree(tiny_text_model, pickle_dir)
    for f in pickle_dir.glob("*.safetensors"):
        f.unlink()
    torch.save({"w": torch.zeros(1)}, pickle_dir / "pytorch_model.bin")
    png = next((shapes_data["train"].parent / "img").glob("train-*.png")).read_bytes()
    members = {f"k{i}.{ext}": (png if ext == "png" else f"a red circle {i}".encode())
               for i in range(4) for ext in ("png", "txt")}
    _tar(tmp / "whole-000000.tar", members)
    data = (tmp / "whole-000000.tar").read_bytes()
    (tmp / "cut-000000.tar").write_bytes(data[:len(data) // 2])
    _tar(tmp / "lonely-000000.tar", {**members, "lonely.png": png})
    fresh = tiny_recipe(tmp, tiny_text_model, shapes_data, **{"train.epochs": 1, "output_dir": str(tmp / "fresh")})
    write_recipe(tmp / "recipe.yaml", fresh)
    for name in ("bad_utf8.jsonl", "bad_json.jsonl"):  # relative image paths resolve beside the manifest
        shutil.copy(tmp / name, shapes_data["train"].parent / name)
    places = {"tmp": tmp, "recipe": tmp / "recipe.yaml", "run": tmp / "run", "export": tmp / "export",
              "corrupt_run": tmp / "corrupt_run", "notes": tmp / "notes", "file": tmp / "file",
              "bad_utf8_recipe": tmp / "bad_utf8_recipe.yaml", "bad_yaml": tmp / "bad_yaml.yaml",
              "list_recipe": tmp / "list_recipe.yaml", "pickle_dir": pickle_dir,
              "bad_utf8_manifest": shapes_data["train"].parent / "bad_utf8.jsonl",
              "bad_json_manifest": shapes_data["train"].parent / "bad_json.jsonl",
              "lonely_shard": tmp / "lonely-000000.tar", "cut_shard": tmp / "cut-000000.tar"}
    return {k: str(v) for k, v in places.items()}


def _tar(path: Path, members: dict[str, bytes]) -> None:
    """A WebDataset-style shard holding ``members`` (name -> bytes)."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _state(tmp: Path) -> dict:
    """Bytes of every file that must survive: the run, its export, the corrupt run, notes, the file."""
    keep = [tmp / n for n in ("run", "export", "corrupt_run", "notes")]
    out = {str(p): p.read_bytes() for root in keep for p in sorted(root.rglob("*")) if p.is_file()}
    out[str(tmp / "file")] = (tmp / "file").read_bytes()
    return out


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_bad_input_is_one_line_exit_2_and_loses_nothing(world, row, monkeypatch):
    tmp = Path(world["tmp"])
    for leftover in ("fresh", "out"):
        shutil.rmtree(tmp / leftover, ignore_errors=True)
    before = _state(tmp)
    if row.enospc:
        def full(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr("fuse.base.atomic._fsync", full)
    result = CliRunner().invoke(cli, [a.format(**world) for a in row.args])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert row.expect in errors[0], errors[0]
    assert _state(tmp) == before
    assert not [p for p in tmp.rglob(".*") if ".tmp" in p.name or ".old-" in p.name or "fuse-tmp-" in p.name]
    assert not (tmp / "out").exists()


def markdown_rows() -> list[str]:
    """The matrix as docs/reliability.md shows it (regenerate with: python tests/test_bad_inputs.py)."""
    out = []
    for r in ROWS:
        cmd = "fuse " + " ".join(a.replace("{recipe}", "recipe.yaml").replace("{", "").replace("}", "")
                                 for a in r.args)
        out.append(f"| {r.input} | `{cmd}`{' + ENOSPC' if r.enospc else ''} | {r.expect} | 2 | {r.kept} |")
    return out


def test_docs_show_every_row():
    doc = (Path(__file__).parent.parent / "docs" / "reliability.md").read_text()
    missing = [row for row in markdown_rows() if row not in doc]
    assert not missing, "regenerate the matrix in docs/reliability.md:\n" + "\n".join(missing)


if __name__ == "__main__":
    print("\n".join(markdown_rows()))
