"""LoRA on an unfrozen hf-text encoder under torchrun (2 gloo ranks): DDP takes one process's steps on
the global batch (adapters and heads), and FSDP trains and exports a merged encoder that loads without peft."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import make_tiny_text_model, tiny_recipe, write_recipe
from safetensors.torch import load_file
from test_unfrozen_distributed import TORCHRUN, _train, _weights

pytestmark = pytest.mark.slow

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target": ["*attention.self.query", "*attention.self.value"]}
STEPS, LR = 3, 3e-3


def _recipe(tmp_path, name, text_model, data, **extra):
    common = {"train.batch_size": 8, "train.max_steps": STEPS, "optim.weight_decay": 0.0, "optim.encoder_lr": LR,
              "modalities.text.encoder.frozen": False, "modalities.text.encoder.lora": LORA,
              "modalities.text.encoder.options.dropout": 0.0, "schedule.min_lr_ratio": 1.0, **extra}
    return write_recipe(tmp_path / f"{name}.yaml", tiny_recipe(tmp_path / name, text_model, data, **common))


@pytest.fixture(scope="module")
def still_bert(tmp_path_factory):
    return make_tiny_text_model(tmp_path_factory.mktemp("lora-bert"), dropout=0.0)


def test_lora_ddp_takes_the_steps_of_one_process(tmp_path, still_bert, shapes_data):
    _train([sys.executable], _recipe(tmp_path, "one", still_bert, shapes_data, **{"train.fsdp": False}))
    _train(TORCHRUN, _recipe(tmp_path, "two", still_bert, shapes_data, **{"train.fsdp": False}))
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys() and any("lora_" in k for k in a)
    assert not any(k.startswith("model.encoders.text.") and "lora_" not in k for k in a)  # adapters only
    diff = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a])
    print(f"max {diff.max():.2e}, share equal {(diff < 1e-6).float().mean():.4f}")
    assert (diff < 1e-6).float().mean() > 0.99 and diff.max() <= 3 * 2 * 3e-3


def test_lora_fsdp_trains_and_exports_a_merged_encoder(tmp_path, still_bert, shapes_data):
    _train(TORCHRUN, _recipe(tmp_path, "fsdp", still_bert, shapes_data, **{"train.fsdp": True}))
    exported = load_file(str(tmp_path / "fsdp" / "run" / "export" / "text" / "encoder" / "model.safetensors"))
    assert exported and not any("lora_" in k for k in exported)
    start = load_file(str(still_bert / "model.safetensors"))
    moved = [k for k in exported if "attention.self.query.weight" in k and not torch.equal(exported[k], start[k])]
    assert moved  # the adapters were merged into the base weights
    assert all(torch.equal(exported[k], start[k]) for k in exported if "attention.output.dense" in k)
    # the export is a plain model: it loads where peft cannot import and embeds as it does here
    import subprocess

    import fuse

    export = tmp_path / "fsdp" / "run" / "export"
    code = ("import sys, json; sys.modules['peft'] = None\nimport fuse\n"
            f"z = fuse.load({str(export)!r}).embed('text', ['a red circle', 'the blue square'])\n"
            "print(json.dumps(z.flatten().tolist()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    here = fuse.load(export).embed("text", ["a red circle", "the blue square"]).flatten()
    assert torch.allclose(torch.tensor(json.loads(out.stdout.strip().splitlines()[-1])), here, atol=1e-6)


def test_lora_fsdp_resume_continues_bit_identically(tmp_path, still_bert, shapes_data):
    """A LoRA checkpoint (adapters only, sharded optimiser state gathered whole) resumes under FSDP: two
    steps, then --resume to four, ends on the weights four steps in one go reach."""
    _train(TORCHRUN, _recipe(tmp_path, "straight", still_bert, shapes_data, **{"train.fsdp": True,
                                                                               "train.max_steps": 4}))
    half = _recipe(tmp_path, "resumed", still_bert, shapes_data, **{"train.fsdp": True, "train.max_steps": 2})
    _train(TORCHRUN, half)
    out = _train(TORCHRUN, half, "--resume", "train.max_steps=4")
    assert "resuming" in out
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and any("lora_" in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
