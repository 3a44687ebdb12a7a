"""LoRA on an encoder (peft): only adapters and heads train, checkpoints hold the adapters only, the export
merges them (checked against W + alpha/r * B @ A by hand) and loads in a process where peft cannot import."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe
from safetensors.torch import load_file

from fuse.cli import cli

pytest.importorskip("peft", reason="the lora extra is not installed (pip install 'fuse-align[lora]')")
LORA = {"r": 4, "alpha": 8, "target": ["*.query", "*.value"]}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_text_model, shapes_data):
    tmp = tmp_path_factory.mktemp("lora")
    recipe = write_recipe(tmp / "r.yaml", tiny_recipe(tmp, tiny_text_model, shapes_data, **{
        "train.epochs": 2, "train.chunk_size": 4, "optim.encoder_lr": 1e-2,
        "modalities.text.encoder": {"name": "hf-text", "frozen": False, "lora": LORA,
                                    "options": {"model": str(tiny_text_model)}}}))
    result = CliRunner().invoke(cli, ["train", str(recipe)])  # with GradCache chunks of 4
    assert result.exit_code == 0, result.output
    return tmp / "run", result.output


def test_only_adapters_and_heads_train_and_are_checkpointed(lora_run):
    run, output = lora_run
    assert "text encoder: LoRA r=4 on 4 layers" in output  # 2 layers x (query, value) in the tiny BERT
    saved = load_file(str(run / "checkpoints" / "best.safetensors"))
    text = [k for k in saved if k.startswith("model.encoders.text.")]
    assert text and all(".lora_A." in k or ".lora_B." in k for k in text)
    assert any(k.startswith("model.heads.text.") for k in saved)
    assert any(saved[k].abs().sum() > 0 for k in text if ".lora_B." in k)  # B starts at zero: it trained


def test_export_holds_merged_weights_and_loads_without_peft(lora_run, tiny_text_model):
    run, _ = lora_run
    adapters = load_file(str(run / "checkpoints" / "best.safetensors"))
    exported = load_file(str(next((run / "export" / "text" / "encoder").glob("*.safetensors"))))
    assert not any("lora" in k for k in exported)
    base = load_file(str(next(tiny_text_model.glob("*.safetensors"))))
    checked = 0
    for key in exported:
        if key.endswith(("query.weight", "value.weight")):
            stem = key.removesuffix(".weight").split("encoder.", 1)[-1]
            a = next(v for k, v in adapters.items() if k.endswith(stem + ".lora_A.default.weight"))
            b = next(v for k, v in adapters.items() if k.endswith(stem + ".lora_B.default.weight"))
            w = next(v for k, v in base.items() if k.endswith(stem + ".weight"))
            torch.testing.assert_close(exported[key], w + LORA["alpha"] / LORA["r"] * b @ a, rtol=1e-5, atol=1e-6)
            checked += 1
    assert checked == 4
    code = ("import sys; sys.modules['peft'] = None\nimport fuse\n"
            f"m = fuse.load({str(run / 'export')!r})\nprint(tuple(m.embed('text', ['a red circle']).shape))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1",
                         "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and "(1, 16)" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize("encoder, message", [
    ({"frozen": True, "lora": LORA}, "lora trains adapters in a running encoder: give frozen: false"),
    ({"frozen": False, "lora": {"target": ["nothing.*"]}}, "modalities.text.encoder.lora.target: no layer matches"),
])
def test_bad_lora_is_one_line(tmp_path, tiny_text_model, shapes_data, encoder, message):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "modalities.text.encoder": {"name": "hf-text", "options": {"model": str(tiny_text_model)}, **encoder}}))
    result = CliRunner().invoke(cli, ["train", str(recipe)])
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_run_stopped_by_nan_exports_merged_weights(tmp_path, tiny_text_model, shapes_data, monkeypatch):
    """export_on_failure rolls back to the best good adapters and merges them like a finished run."""
    from fuse.training.step import StepModule

    real, calls = StepModule.forward, []

    def forward(module, batches):  # a real forward whose 5th step (epoch 2 of 3 steps each) turns NaN
        calls.append(1)
        loss, terms = real(module, batches)
        return (loss * float("nan"), {k: v * float("nan") for k, v in terms.items()}) if len(calls) == 5 \
            else (loss, terms)

    monkeypatch.setattr(StepModule, "forward", forward)
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "train.epochs": 3, "optim.encoder_lr": 1e-2,
        "modalities.text.encoder": {"name": "hf-text", "frozen": False, "lora": LORA,
                                    "options": {"model": str(tiny_text_model)}}}))
    result = CliRunner().invoke(cli, ["train", str(recipe)])
    assert result.exit_code == 2 and "at step 5 (the first bad step)" in result.output, result.output
    exported = load_file(str(next((tmp_path / "run" / "export" / "text" / "encoder").glob("*.safetensors"))))
    assert not any("lora" in k for k in exported) and all(torch.isfinite(v).all() for v in exported.values())
    adapters = load_file(str(tmp_path / "run" / "checkpoints" / "best.safetensors"))
    base = load_file(str(next(tiny_text_model.glob("*.safetensors"))))
    key = next(k for k in exported if k.endswith("query.weight"))
    stem = key.removesuffix(".weight").split("encoder.", 1)[-1]
    a = next(v for k, v in adapters.items() if k.endswith(stem + ".lora_A.default.weight"))
    b = next(v for k, v in adapters.items() if k.endswith(stem + ".lora_B.default.weight"))
    w = next(v for k, v in base.items() if k.endswith(stem + ".weight"))
    assert b.abs().sum() > 0  # epoch 1 trained the adapters, so merging them changes the weight
    torch.testing.assert_close(exported[key], w + LORA["alpha"] / LORA["r"] * b @ a, rtol=1e-5, atol=1e-6)
