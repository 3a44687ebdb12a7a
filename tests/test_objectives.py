"""FuseMix, SigLIP and distillation against independently written formulas, plus properties."""

from __future__ import annotations

import math

import pytest
import torch

from fuse.errors import RecipeError
from fuse.interfaces import Step
from fuse.plugin_manager import registry

MODS = ("image", "text")


def make(name, options=None, extra_dims=None, dim=4):
    return registry("objective").create(name, options or {}, modalities=MODS, embed_dim=dim, extra_dims=extra_dims)


def linear_heads(dim_in=6, dim_out=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = {m: torch.randn(dim_in, dim_out, generator=g, requires_grad=True) for m in MODS}
    return w, (lambda lat: {m: x @ w[m] for m, x in lat.items()})


def batch(n=6, dim=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, dim, generator=g) for m in MODS}


def py_infonce(a, b, scale):
    def norm(v):
        s = math.sqrt(sum(x * x for x in v))
        return [x / s for x in v]
    a, b = [norm(r) for r in a.tolist()], [norm(r) for r in b.tolist()]
    n = len(a)
    sim = [[scale * sum(x * y for x, y in zip(a[i], b[j])) for j in range(n)] for i in range(n)]
    ce = lambda rows: sum(math.log(sum(math.exp(v) for v in rows[i])) - rows[i][i] for i in range(n)) / n
    return 0.5 * (ce(sim) + ce([list(c) for c in zip(*sim)]))


# ---- FuseMix -------------------------------------------------------------------------

def test_fusemix_with_lambda_one_equals_infonce():
    lat = batch()
    w, embed = linear_heads()
    fm = make("fusemix", {"fixed_lambda": 1.0, "pairing": "permutation"})
    nce = make("infonce")
    step = Step(MODS, lat, embed=embed)
    assert torch.allclose(fm(step), nce(step), atol=1e-6)


def test_fusemix_halves_matches_hand_mixing():
    lat = batch(n=6)
    w, embed = linear_heads()
    fm = make("fusemix", {"fixed_lambda": 0.3, "pairing": "halves"})
    got = fm(Step(MODS, lat, embed=embed))
    mixed = {m: 0.3 * x[:3] + 0.7 * x[3:] for m, x in lat.items()}
    want = py_infonce(mixed["image"] @ w["image"].detach(), mixed["text"] @ w["text"].detach(), 1 / 0.07)
    assert abs(float(got) - want) < 1e-4


def test_fusemix_shares_one_lambda_and_partner_across_modalities():
    fm = make("fusemix", {"pairing": "permutation", "alpha": 0.5})
    torch.manual_seed(3)
    x = torch.randn(8, 5)
    mixed = fm.mix({"image": x, "text": 2 * x}, torch.tensor(0.37))
    assert torch.allclose(mixed["text"], 2 * mixed["image"])  # same lambda, same partner for both


def test_fusemix_lambda_is_seeded_and_beta_distributed():
    fm = make("fusemix", {"alpha": 1.0})
    torch.manual_seed(0)
    a = [float(fm.draw_lambda("cpu")) for _ in range(2000)]
    torch.manual_seed(0)
    assert a[:5] == [float(fm.draw_lambda("cpu")) for _ in range(5)]
    assert abs(sum(a) / len(a) - 0.5) < 0.03 and abs(sum(v < 0.25 for v in a) / 2000 - 0.25) < 0.04  # Beta(1,1)


def test_fusemix_gradients_finite_and_temperature_clamped():
    fm = make("fusemix")
    w, embed = linear_heads()
    opt = torch.optim.SGD([*w.values(), *fm.parameters()], lr=500.0)
    for _ in range(3):
        loss = fm(Step(MODS, batch(), embed=embed))
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in [*w.values(), *fm.parameters()])
        opt.step()
        opt.zero_grad()
    fm(Step(MODS, batch(), embed=embed))
    assert 0.01 - 1e-7 <= fm.metrics()["temperature"] <= 100


def test_fusemix_refuses_non_positive_alpha():
    with pytest.raises(RecipeError, match="alpha must be > 0"):
        make("fusemix", {"alpha": 0})


# ---- SigLIP --------------------------------------------------------------------------

def py_siglip(a, b, t, bias):
    def norm(v):
        s = math.sqrt(sum(x * x for x in v))
        return [x / s for x in v]
    a, b = [norm(r) for r in a.tolist()], [norm(r) for r in b.tolist()]
    n, total = len(a), 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = t * sum(x * y for x, y in zip(a[i], b[j])) + bias
            total += math.log(1 / (1 + math.exp(-z * logit)))
    return -total / n


def test_siglip_matches_hand_written_formula_at_paper_init():
    lat = batch()
    _, embed = linear_heads()
    sl = make("siglip")
    assert float(sl.log_t) == pytest.approx(math.log(10)) and float(sl.bias) == -10
    step = Step(MODS, lat, embed=embed)
    want = py_siglip(step.embeddings["image"].detach(), step.embeddings["text"].detach(), 10.0, -10.0)
    assert abs(float(sl(step)) - want) < 1e-4


def test_siglip_golden_number():
    # two orthogonal pairs, t = 10, b = -10: diagonal logits 0, off-diagonal -10
    a = torch.eye(2)
    sl = make("siglip", dim=2)
    got = float(sl(Step(MODS, {"image": a, "text": a}, embed=lambda x: x)))
    want = -(2 * math.log(0.5) + 2 * math.log(1 / (1 + math.exp(-10)))) / 2
    assert abs(got - want) < 1e-6


def test_siglip_bias_and_temperature_learn():
    sl = make("siglip")
    _, embed = linear_heads()
    loss = sl(Step(MODS, batch(), embed=embed))
    loss.backward()
    assert sl.bias.grad is not None and sl.log_t.grad is not None and torch.isfinite(loss)


# ---- memory bank and distillation ------------------------------------------------------

def test_memory_bank_order_and_size_after_wrap_around():
    from fuse.plugins.memory_bank import MemoryBank

    bank = MemoryBank(size=5, dim=1)
    bank.enqueue(torch.tensor([[1.0], [2.0], [3.0]]))
    assert bank.items().flatten().tolist() == [1, 2, 3]
    bank.enqueue(torch.tensor([[4.0], [5.0], [6.0], [7.0]]))
    assert bank.items().flatten().tolist() == [3, 4, 5, 6, 7] and int(bank.count) == 5
    bank.enqueue(torch.arange(10.0, 17.0)[:, None])  # more than the size at once
    assert bank.items().flatten().tolist() == [12, 13, 14, 15, 16]
    assert "queue" not in bank.state_dict()  # not saved in checkpoints


def py_distillation(students, teacher, bank, tau):
    """Per student: CE of (normalised) student vs [teacher batch ; bank] with the diagonal positive."""
    def norm(v):
        s = math.sqrt(sum(x * x for x in v))
        return [x / s for x in v]
    keys = [norm(t) for t in teacher.tolist()] + bank.tolist()
    total = 0.0
    for s_emb in students:
        rows = [norm(r) for r in s_emb.tolist()]
        ce = 0.0
        for i, r in enumerate(rows):
            logits = [sum(x * y for x, y in zip(r, k)) / tau for k in keys]
            ce += math.log(sum(math.exp(v) for v in logits)) - logits[i]
        total += ce / len(rows)
    return total / len(students)


def test_distillation_matches_formula_and_fills_the_bank():
    torch.manual_seed(0)
    d = make("distillation", {"queue_size": 8}, extra_dims={"teacher": 3})
    lat = batch(n=4)
    _, embed = linear_heads()
    teacher1, teacher2 = torch.randn(4, 3), torch.randn(4, 3)
    step = Step(MODS, lat, embed=embed, extras={"teacher": teacher1})
    first = d(step)
    students = [d.predictors[m](step.embeddings[m]).detach() for m in MODS]
    assert abs(float(first) - py_distillation(students, teacher1, torch.empty(0, 3), 0.07)) < 1e-4
    step2 = Step(MODS, lat, embed=embed, extras={"teacher": teacher2})
    second = d(step2)  # now the bank holds teacher1 as negatives
    bank = torch.nn.functional.normalize(teacher1, dim=-1)
    students = [d.predictors[m](step2.embeddings[m]).detach() for m in MODS]
    assert abs(float(second) - py_distillation(students, teacher2, bank, 0.07)) < 1e-4
    assert int(d.bank.count) == 8


def test_distillation_without_teacher_is_a_recipe_error(tmp_path, tiny_text_model, shapes_data):
    from conftest import tiny_recipe, write_recipe
    from fuse.recipe import load_recipe

    with pytest.raises(RecipeError, match="needs a `teacher:` section"):
        make("distillation")
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "objectives": [{"name": "infonce"}, {"name": "distillation", "weight": 0.5}]}))
    with pytest.raises(RecipeError, match=r"objectives.1 \(distillation\) needs 'teacher'"):
        load_recipe(recipe)


def test_fusemix_with_a_fusion_is_a_recipe_error(tmp_path, tiny_text_model, shapes_data):
    from conftest import tiny_recipe, write_recipe
    from fuse.recipe import load_recipe

    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "objectives": [{"name": "fusemix"}],
        "fusion": {"name": "shared-transformer", "options": {"width": 16, "heads": 2}}}))
    with pytest.raises(RecipeError, match=r"objectives.0 \(fusemix\) works on pooled latents"):
        load_recipe(recipe)


def test_composed_objectives_train_with_a_teacher_and_log_each_term(tmp_path, tiny_text_model, shapes_data):
    from click.testing import CliRunner

    from conftest import tiny_recipe, write_recipe
    from fuse.cli import cli
    from fuse.metrics import read_metrics

    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "train.epochs": 2, "train.log_every": 1,
        "teacher": {"modality": "image", "encoder": {"name": "timm", "options": {"model": "test_vit", "pretrained": False}}},
        "objectives": [{"name": "infonce"}, {"name": "siglip", "weight": 0.1},
                       {"name": "distillation", "weight": 0.5, "options": {"queue_size": 16}}]}))
    result = CliRunner().invoke(cli, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "teacher/train: cached 24 latents" in result.output
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    last = rows[-1]
    assert {"loss/infonce", "loss/siglip", "loss/distillation"} <= set(last)
    total = last["loss/infonce"] + 0.1 * last["loss/siglip"] + 0.5 * last["loss/distillation"]
    assert last["loss"] == pytest.approx(total, rel=1e-5)
    assert last["memory_bank_fill"] == 16
