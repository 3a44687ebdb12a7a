"""GradCache (train.chunk_size): the loss and gradients of the full batch, with dropout on.

The reference keeps every chunk's graph: it encodes the batch chunk by chunk *with* autograd
(so dropout draws the masks a chunked encoder draws) and backpropagates the full batch's loss
once. GradCache must give the same loss and the same gradient for every parameter, for every
objective that couples the batch, on one process and on two gloo ranks. Without the RNG replay
the encoder gradients differ (dropout masks change between the two passes), so these fail.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import fuse
from fuse.model.aligned import build_model
from fuse.training.gradcache import Backward, split_inputs
from fuse.training.precision import Precision
from fuse.training.step import StepModule

PAIR = ("image", "text")
N = 12  # rows in the value tables
WORDS = ["red", "green", "blue", "yellow", "circle", "square", "triangle", "white", "on", "the", "a"]


def build(text_model, objective: str, options: dict | None = None, online_image: bool = False,
          dropout: float | None = None) -> StepModule:
    """Image (a table of frozen latents, or an online timm net with BatchNorm) + online tiny BERT (dropout 0.1,
    or hf-text's `dropout` option)."""
    torch.manual_seed(0)
    towers = {"image": {"encoder": {"name": "timm", "options": {"model": "test_efficientnet", "pretrained": False}},
                        "head": {"name": "linear"}},
              "text": {"encoder": {"name": "hf-text", "options": {"model": str(text_model), "dropout": dropout}},
                       "head": {"name": "residual-mlp", "options": {"depth": 1, "expansion": 2}}}}
    model = build_model(towers, 16)
    obj = fuse.create("objective", objective, options or {}, modalities=PAIR, embed_dim=16,
                      extra_dims={"teacher": 12})
    frozen = set() if online_image else {"image"}
    step = StepModule(model, nn.ModuleDict({"o": obj}), [SimpleNamespace(key="o", pair=PAIR, weight=1.0)],
                     [SimpleNamespace(modalities=PAIR, weight=1.0)], frozen, {"teacher": "image"})
    gen = torch.Generator().manual_seed(1)
    step.latents = {"image": torch.randn(N, model.encoders["image"].info.dim, generator=gen)}
    step.extras = {"teacher": torch.randn(N, 12, generator=gen)}
    model.encoders["image"].requires_grad_(online_image)
    return step.train()


def batch_of(step: StepModule, idx: list[int]) -> dict:
    """Rows idx of the tables, with online inputs: captions (and small images) made from the index."""
    from PIL import Image

    text = [" ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 2 + i % 5)) for i in idx]
    inputs = {"text": step.model.encoders["text"].preprocess(text)}
    if "image" not in step.frozen:
        imgs = [Image.new("RGB", (32, 32), (20 * i % 255, 90, 200 - 10 * i)) for i in idx]
        inputs["image"] = step.model.encoders["image"].preprocess(imgs)
    rows = torch.tensor([[i, i] for i in idx])
    return {PAIR: (rows, inputs)}


def reference(step: StepModule, parts: list[list[int]], chunk: int, seeds: list[int]):
    """The full batch's loss with every chunk's graph kept; part r (a rank's rows, preprocessed
    and padded on its own) starts from seeds[r]."""
    online = [m for m in PAIR if m not in step.frozen]
    outs = {m: [] for m in online}
    for idx, seed in zip(parts, seeds):
        torch.manual_seed(seed)
        inputs = batch_of(step, idx)[PAIR][1]
        for m in online:  # the order GradCache encodes in: pair order, chunk by chunk
            outs[m] += [step.model.encode_batch(m, c) for c in split_inputs(inputs[m], chunk, m)]
    batch = batch_of(step, [i for idx in parts for i in idx])
    loss, _ = step(batch, latents={PAIR: {m: torch.cat(outs[m]) for m in online}})
    loss.backward()
    return loss.detach(), grads(step)


def grads(step: StepModule) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in step.named_parameters() if p.grad is not None}


def chunked(step: StepModule, batch: dict, chunk: int, seed: int):
    torch.manual_seed(seed)
    loss, _ = Backward(step, step, Precision("fp32", torch.device("cpu")), chunk)(batch, 1.0)
    return loss.detach(), grads(step)


def assert_same(got: dict, want: dict):
    assert got.keys() == want.keys()
    encoder = [n for n in want if ".encoders." in n]
    assert encoder, "some encoder parameters must be trained"
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("objective,options", [("infonce", {}), ("siglip", {}),
                                               ("fusemix", {"pairing": "permutation"}), ("fusemix", {}),
                                               ("distillation", {"queue_size": 0})])
def test_chunked_equals_full_batch_with_dropout(tiny_text_model, objective, options):
    idx = list(range(10))
    want_loss, want = reference(build(tiny_text_model, objective, options), [idx], 4, [7])
    got_loss, got = chunked(step := build(tiny_text_model, objective, options), batch_of(step, idx), 4, 7)
    torch.testing.assert_close(got_loss, want_loss)
    assert_same(got, want)


def test_chunked_online_batchnorm_tower_and_running_stats(tiny_text_model):
    """Both towers online (BatchNorm in the image net): same gradients; running stats updated once per chunk."""
    idx = list(range(8))
    ref_step = build(tiny_text_model, "infonce", online_image=True)
    want_loss, want = reference(ref_step, [idx], 3, [3])
    step = build(tiny_text_model, "infonce", online_image=True)
    got_loss, got = chunked(step, batch_of(step, idx), 3, 3)
    torch.testing.assert_close(got_loss, want_loss)
    assert_same(got, want)
    for (name, a), b in zip(ref_step.model.encoders["image"].named_buffers(), step.model.encoders["image"].buffers()):
        torch.testing.assert_close(a, b, msg=name)  # the reference ran each chunk once


def test_without_dropout_equals_the_plain_step(tiny_text_model):
    """Dropout off: the chunked step is the plain full-batch step (one forward, one backward)."""
    idx = list(range(10))
    step = build(tiny_text_model, "infonce")
    step.model.encoders["text"].eval()
    loss = step(batch_of(step, idx))[0]
    loss.backward()
    want = grads(step)
    step = build(tiny_text_model, "infonce")
    step.model.encoders["text"].eval()
    got_loss, got = chunked(step, batch_of(step, idx), 3, 0)
    torch.testing.assert_close(got_loss, loss.detach())
    assert_same(got, want)


def _plain(step: StepModule, idx: list[int], seed: int):
    torch.manual_seed(seed)
    loss = step(batch_of(step, idx))[0]
    loss.backward()
    return loss.detach(), grads(step)


def test_dropout_option_off_chunked_equals_plain_in_train_mode(tiny_text_model):
    """hf-text `dropout: 0`: in train mode, other seeds, the chunked step is the plain step (exact up to float
    summation order: rtol 1e-4, atol 1e-6 on every gradient; the loss to torch's float32 default)."""
    idx = list(range(10))
    want_loss, want = _plain(build(tiny_text_model, "infonce", dropout=0.0), idx, 1)
    step = build(tiny_text_model, "infonce", dropout=0.0)
    assert step.model.encoders["text"].training and step.model.encoders["text"].model.config.hidden_dropout_prob == 0.0
    got_loss, got = chunked(step, batch_of(step, idx), 3, 2)
    torch.testing.assert_close(got_loss, want_loss)
    assert_same(got, want)


@pytest.mark.slow
def test_dropout_on_chunked_matches_plain_in_expectation_only(tiny_text_model):
    """The checkpoint's dropout (0.1): one chunked step differs from the plain step of the same seed (the
    masks are drawn chunk by chunk), but both draw i.i.d. masks, so the loss has one distribution:
    the means over 16 seeds agree within 4 standard errors."""
    idx = list(range(10))
    plain_step, chunk_step = build(tiny_text_model, "infonce"), build(tiny_text_model, "infonce")
    plain, chunk = [], []
    batch = batch_of(plain_step, idx)
    for seed in range(16):
        torch.manual_seed(seed)
        with torch.no_grad():
            plain.append(plain_step(batch)[0])
        chunk_step.zero_grad()
        chunk.append(chunked(chunk_step, batch, 3, seed)[0])
    plain, chunk = torch.stack(plain), torch.stack(chunk)
    assert (plain - chunk).abs().max() > 1e-3  # not equal step by step
    stderr = ((plain.var() + chunk.var()) / len(plain)).sqrt()
    print(f"plain {plain.mean():.4f}, chunked {chunk.mean():.4f}, standard error {stderr:.4f}, "
          f"largest step difference {(plain - chunk).abs().max():.4f}")
    assert (plain.mean() - chunk.mean()).abs() < 4 * stderr, (plain.mean(), chunk.mean(), stderr)


# ------------------------------------------------------------------ two gloo ranks

CASES = [("siglip", {}), ("infonce", {"local_loss": True}), ("siglip", {"local_loss": True})]


def _rank(rank: int, world: int, init: str, text_model: str, out: str):
    import torch.distributed as dist
    from safetensors.torch import save_file

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        for i, (objective, options) in enumerate(CASES):
            step = build(text_model, objective, options)
            idx = list(range(8))[rank * 4:(rank + 1) * 4]
            loss, _ = chunked(step, batch_of(step, idx), 3, 100 + rank)  # averages gradients over ranks
            save_file({**grads(step), "loss": loss.reshape(1)}, f"{out}/{i}-{rank}.safetensors")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_full_batch(tmp_path, tiny_text_model):
    """Each rank chunks its half; after the gradient average, the single process's full-batch gradient.

    local_loss gives each rank only its share of the loss, but the same averaged gradient."""
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    # fork: the ranks inherit the imported modules (spawn would import torch & co. again, ~15 s each)
    mp.start_processes(_rank, args=(2, f"file://{tmp_path / 'store'}", str(tiny_text_model), str(tmp_path)),
                       nprocs=2, start_method="fork")
    for i, (objective, options) in enumerate(CASES):
        step = build(tiny_text_model, objective, {k: v for k, v in options.items() if k != "local_loss"})
        want_loss, want = reference(step, [[0, 1, 2, 3], [4, 5, 6, 7]], 3, [100, 101])
        ranks = [load_file(str(tmp_path / f"{i}-{r}.safetensors")) for r in range(2)]
        losses = [r.pop("loss") for r in ranks]
        if options.get("local_loss"):
            torch.testing.assert_close((losses[0] + losses[1]) / 2, want_loss.reshape(1))
        else:
            for got in losses:
                torch.testing.assert_close(got, want_loss.reshape(1))
        for got in ranks:
            assert_same(got, want)


def test_fuse_train_with_chunks_and_checkpointing(tmp_path, tiny_text_model, shapes_data):
    """The recipe options reach the loop: `fuse train` fine-tunes an unfrozen tower in chunks."""
    from click.testing import CliRunner
    from conftest import tiny_recipe, write_recipe
    from safetensors.torch import load_file

    from fuse.cli import cli

    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "train.max_steps": 2, "train.chunk_size": 3, "data.val": None, "modalities.text.encoder.frozen": False,
        "modalities.text.encoder.options.gradient_checkpointing": True}))
    result = CliRunner().invoke(cli, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "online towers in chunks of 3" in result.output
    ckpt = load_file(str(tmp_path / "run" / "checkpoints" / "epoch-001.safetensors"))
    before = load_file(str(tiny_text_model / "model.safetensors"))
    key = "embeddings.word_embeddings.weight"
    assert not ckpt[f"model.encoders.text.model.{key}"].allclose(before[key])
