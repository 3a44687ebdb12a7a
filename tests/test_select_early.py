"""`fuse select` and `fuse curate` fail before the first encoding, and select's recipe trains into its own run."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from fuse.cli import cli


def candidates(tmp_path, text_model, extra_text=(), **extra):
    path = tmp_path / "candidates.yaml"
    path.write_text(yaml.safe_dump({"candidates": {
        "image": [{"label": "effnet", "name": "timm",
                   "options": {"model": "test_efficientnet", "pretrained": False, "init_seed": 0}}],
        "text": [{"label": "bert", "name": "hf-text", "options": {"model": str(text_model)}}, *extra_text]},
        "k": 3, **extra}))
    return path


def run_select(tmp_path, cands, sample, out):
    return CliRunner().invoke(cli, ["select", str(cands), "--data", str(sample), "--out", str(out), "--device", "cpu",
                                    "--cache-dir", str(tmp_path / "cache")])


def test_a_candidate_whose_package_is_missing_fails_before_any_encoding(tmp_path, tiny_text_model, shapes_data,
                                                                       monkeypatch):
    import fuse.model.selection as selection

    encoded = []
    monkeypatch.setattr(selection, "encode_candidate", lambda *a, **k: encoded.append(a) or 1 / 0)
    cands = candidates(tmp_path, tiny_text_model, extra_text=[
        {"label": "minilm", "name": "hf-text", "options": {"model": "pkg:nosuch_weights_pkg/model"}}])
    result = run_select(tmp_path, cands, shapes_data["train"], tmp_path / "out")
    assert result.exit_code == 2 and encoded == []
    line = result.output.strip().splitlines()[-1]
    assert "candidates.text[1].options.model" in line and "'nosuch_weights_pkg', which is not installed" in line


def test_select_out_that_is_a_users_folder_is_refused_before_encoding(tmp_path, tiny_text_model, shapes_data,
                                                                     monkeypatch):
    import fuse.model.selection as selection

    monkeypatch.setattr(selection, "encode_candidate", lambda *a, **k: 1 / 0)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "select.json").write_text("my notes")
    result = run_select(tmp_path, candidates(tmp_path, tiny_text_model), shapes_data["train"], tmp_path / "mine")
    assert result.exit_code == 2 and "is not a fuse select folder" in result.output
    assert (tmp_path / "mine" / "select.json").read_text() == "my notes"


def test_the_generated_recipe_trains_into_the_top_pairs_run_not_the_templates(tmp_path, tiny_text_model,
                                                                              shapes_data):
    template = tmp_path / "template.yaml"
    template.write_text(yaml.safe_dump({"name": "quickstart", "output_dir": "runs/quickstart", "embed_dim": 16,
                                        "modalities": {"image": {}, "text": {}},
                                        "data": {"train": str(shapes_data["train"])}}))
    cands = candidates(tmp_path, tiny_text_model, recipe=str(template))
    out = tmp_path / "out"
    result = run_select(tmp_path, cands, shapes_data["train"], out)
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((out / "recipe.yaml").read_text())["output_dir"] == "runs/effnet-bert"
    from fuse.base.owned import claim

    assert claim(out, "select", "--out") is False  # its own folder: a later select writes there again


def test_curate_with_a_missing_encoder_package_fails_before_reading(tmp_path, shapes_data, monkeypatch):
    import fuse.model.curate as curate

    monkeypatch.setattr(curate, "embed_texts", lambda *a, **k: 1 / 0)
    (tmp_path / "c.txt").write_text("circle\nsquare\n")
    result = CliRunner().invoke(cli, ["curate", str(shapes_data["train"]), "--concepts", str(tmp_path / "c.txt"),
                                      "--out", str(tmp_path / "o.jsonl"), "--encoder",
                                      "{name: hf-text, options: {model: pkg:nosuch_weights_pkg/model}}"])
    assert result.exit_code == 2
    assert "--encoder.options.model" in result.output and "not installed" in result.output
