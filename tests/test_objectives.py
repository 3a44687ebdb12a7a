"""FuseMix, SigLIP and distillation against independently written formulas, plus properties.

The reference losses below are plain-Python loops over lists (no torch), written from the
papers' equations; the objectives are built through the registry, so registration by entry
point is exercised too.
"""

from __future__ import annotations

import math

import pytest
import torch

from fuse.base.errors import RecipeError
from fuse.base.interfaces import Step
from fuse.base.plugin_manager import registry

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


# ---- plain-Python references ------------------------------------------------------------

def norm(v):
    s = math.sqrt(sum(x * x for x in v))
    return [x / s for x in v]


def dot(u, v):
    return sum(x * y for x, y in zip(u, v))


def rows(t):
    return [norm(r) for r in t.detach().tolist()]


def py_infonce(a, b, scale):
    a, b = rows(a), rows(b)
    n = len(a)
    sim = [[scale * dot(a[i], b[j]) for j in range(n)] for i in range(n)]

    def ce(m):
        return sum(math.log(sum(math.exp(v) for v in m[i])) - m[i][i] for i in range(n)) / n
    return 0.5 * (ce(sim) + ce([list(c) for c in zip(*sim)]))


def py_siglip(a, b, t, bias):
    a, b = rows(a), rows(b)
    n, total = len(a), 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total += math.log(1 / (1 + math.exp(-z * (t * dot(a[i], b[j]) + bias))))
    return -total / n


def py_distillation(students, teacher, bank, tau, mask_duplicates=True):
    """Mean over students of CE(student_i vs [teacher batch; bank], positive i); keys equal to
    the positive (other than itself) are dropped when mask_duplicates."""
    keys = rows(teacher) + [list(r) for r in bank.tolist()]
    total = 0.0
    for s_emb in students:
        ce = 0.0
        for i, r in enumerate(rows(s_emb)):
            pos = keys[i]
            kept = [k for j, k in enumerate(keys)
                    if j == i or not (mask_duplicates and dot(pos, k) > 1 - 1e-5)]
            logits = [dot(r, k) / tau for k in kept]
            ce += math.log(sum(math.exp(v) for v in logits)) - dot(r, pos) / tau
        total += ce / len(teacher)
    return total / len(students)


# ---- FuseMix -----------------------------------------------------------------------------

@pytest.mark.parametrize("pairing", ["halves", "permutation"])
def test_fusemix_with_lambda_one_equals_infonce(pairing):
    lat = batch()
    _, embed = linear_heads()
    fm = make("fusemix", {"fixed_lambda": 1.0, "pairing": pairing})
    nce = make("infonce")  # same temperature 0.07
    got = fm.step_loss(Step(MODS, lat, embed=embed))
    # lambda 1 leaves every latent unmixed; "halves" keeps only the first half of the batch.
    kept = {m: x[:3] for m, x in lat.items()} if pairing == "halves" else lat
    assert torch.allclose(got, nce.step_loss(Step(MODS, kept, embed=embed)), atol=1e-6)


def test_fusemix_halves_matches_hand_mixing():
    lat = batch(n=7)  # odd: the last pair is left out, as the reference's chunk(2) would require
    w, embed = linear_heads()
    fm = make("fusemix", {"fixed_lambda": 0.3, "pairing": "halves"})
    got = float(fm.step_loss(Step(MODS, lat, embed=embed)).detach())
    mixed = {m: 0.3 * x[:3] + 0.7 * x[3:6] for m, x in lat.items()}
    want = py_infonce(mixed["image"] @ w["image"], mixed["text"] @ w["text"], 1 / 0.07)
    assert got == pytest.approx(want, abs=1e-4)


def test_fusemix_permutation_shares_one_lambda_and_partner_across_modalities():
    fm = make("fusemix", {"pairing": "permutation", "alpha": 0.5})
    n = 8
    eye = torch.eye(n)  # row i is sample i's identity: a mixed row shows its lambda and partner
    torch.manual_seed(3)
    latents = {"image": eye, "text": 3 * eye}
    draws = fm.draw(Step(MODS, latents, embed=None))
    lam = draws["lambda"]
    mixed = fm.mix(latents, draws)
    assert torch.allclose(mixed["text"], 3 * mixed["image"])  # same lambda, same partner for both
    partners = []
    for i, row in enumerate(mixed["image"]):
        j = int(torch.argmax(row - float(lam) * eye[i])) if row[i] < 1 - 1e-6 else i
        partners.append(j)
        assert row.sum() == pytest.approx(1.0) and row[i] >= float(lam) - 1e-6
    assert sorted(partners) == list(range(n))  # one permutation of the batch


def test_fusemix_is_seeded_and_lambda_is_beta_distributed():
    lat = batch()
    _, embed = linear_heads()
    fm = make("fusemix", {"pairing": "permutation"})
    torch.manual_seed(7)
    first = fm.step_loss(Step(MODS, lat, embed=embed))
    lam_first = fm.metrics()["fusemix_lambda"]
    torch.manual_seed(7)
    assert torch.equal(first, fm.step_loss(Step(MODS, lat, embed=embed))) and fm.metrics()["fusemix_lambda"] == lam_first
    for alpha, mean, share_extreme in ((1.0, 0.5, 0.2), (0.2, 0.5, 0.673)):
        # Beta(a, a): mean 1/2; P(lambda < 0.1 or > 0.9) is 0.2 for a = 1 and ~0.67 for a = 0.2
        # (2 * I_0.1(0.2, 0.2), from scipy.special.betainc(0.2, 0.2, 0.1) = 0.3367).
        fm = make("fusemix", {"alpha": alpha})
        torch.manual_seed(0)
        draws = [float(fm.draw_lambda()) for _ in range(3000)]
        assert sum(draws) / len(draws) == pytest.approx(mean, abs=0.03)
        extreme = sum(d < 0.1 or d > 0.9 for d in draws) / len(draws)
        assert extreme == pytest.approx(share_extreme, abs=0.04)


@pytest.mark.parametrize("param", ["raw", "log"])
def test_fusemix_gradients_finite_and_temperature_stays_in_its_clamp(param):
    fm = make("fusemix", {"temperature_param": param})
    w, embed = linear_heads()
    params = [*w.values(), *fm.parameters()]
    opt = torch.optim.SGD(params, lr=1e4)  # absurd steps push the temperature far out of range
    temps = []
    for seed in range(4):
        loss = fm.step_loss(Step(MODS, batch(seed=seed), embed=embed))
        loss.backward()
        assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in params)
        opt.step()
        opt.zero_grad()
        fm.step_loss(Step(MODS, batch(), embed=embed))  # forward clamps the stored value
        temps.append(fm.metrics()["temperature"])
    assert all(0.001 - 1e-9 <= t <= 0.5 + 1e-9 for t in temps)
    assert any(t in (pytest.approx(0.001), pytest.approx(0.5)) for t in temps)  # the clamp was hit


def test_fusemix_raw_temperature_is_the_parameter_itself():
    # The reference's parametrisation: the optimiser moves the temperature by lr * dL/dT.
    lat = batch()
    _, embed = linear_heads()
    fm = make("fusemix", {"fixed_lambda": 1.0, "pairing": "permutation"})
    (param,) = list(fm.parameters())
    assert float(param.detach()) == pytest.approx(0.07)
    fm.step_loss(Step(MODS, lat, embed=embed)).backward()
    emb = embed(lat)
    t = torch.tensor(0.07, requires_grad=True)  # independent: InfoNCE written with logits / T
    a, b = (torch.nn.functional.normalize(emb[m].detach(), dim=-1) for m in MODS)
    logits = a @ b.T / t
    labels = torch.arange(6)
    ref = 0.5 * (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels))
    ref.backward()
    assert float(param.grad) == pytest.approx(float(t.grad), rel=1e-4)


def test_fusemix_option_errors_name_the_field():
    with pytest.raises(RecipeError, match=r"options.alpha: Input should be greater than 0"):
        registry("objective").create("fusemix", {"alpha": 0}, where="objectives.0", modalities=MODS, embed_dim=4)
    with pytest.raises(RecipeError, match=r"init_temperature 0.9 must lie within"):
        make("fusemix", {"init_temperature": 0.9})
    fm = make("fusemix")
    _, embed = linear_heads()
    with pytest.raises(RecipeError, match="at least 2 pairs per batch"):
        fm.step_loss(Step(MODS, batch(n=1), embed=embed))


# ---- SigLIP ------------------------------------------------------------------------------

def test_siglip_matches_hand_written_formula_at_paper_init():
    lat = batch()
    _, embed = linear_heads()
    sl = make("siglip")
    assert float(sl.scale().detach()) == pytest.approx(10.0) and float(sl.bias.detach()) == -10  # t' = log 10, b = -10
    step = Step(MODS, lat, embed=embed)
    want = py_siglip(step.embeddings["image"], step.embeddings["text"], 10.0, -10.0)
    assert float(sl.step_loss(step).detach()) == pytest.approx(want, abs=1e-5)


def test_siglip_golden_number():
    # Two orthogonal pairs, t = 10, b = -10: diagonal logits 0, off-diagonal -10; summed over
    # the 4 pairs, divided by the batch size 2.
    a = torch.eye(2)
    sl = make("siglip", dim=2)
    got = float(sl.step_loss(Step(MODS, {"image": a, "text": a}, embed=lambda x: x)).detach())
    want = (2 * math.log(2) + 2 * math.log(1 + math.exp(-10))) / 2
    assert got == pytest.approx(want, abs=1e-6)
    assert got == pytest.approx(0.6931926, abs=1e-6)


def test_siglip_learns_temperature_and_bias_within_the_clamp():
    sl = make("siglip", {"init_temperature": 0.5, "init_bias": 1.0})
    w, embed = linear_heads()
    step = Step(MODS, batch(), embed=embed)
    want = py_siglip(step.embeddings["image"], step.embeddings["text"], 2.0, 1.0)
    loss = sl.step_loss(step)
    assert float(loss.detach()) == pytest.approx(want, abs=1e-5)
    loss.backward()
    assert float(sl.bias.grad) != 0 and float(sl.scale.log_scale.grad) != 0
    opt = torch.optim.SGD([*w.values(), *sl.parameters()], lr=1e4)
    for seed in range(3):
        opt.zero_grad()
        loss = sl.step_loss(Step(MODS, batch(seed=seed), embed=embed))
        loss.backward()
        assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in sl.parameters())
        opt.step()
    sl.step_loss(step)
    assert 0.01 - 1e-7 <= sl.metrics()["siglip_temperature"] <= 100 + 1e-4
    frozen = make("siglip", {"learnable": False})
    assert not any(p.requires_grad for p in frozen.parameters())


# ---- memory bank -------------------------------------------------------------------------

def test_memory_bank_order_and_size_after_wrap_around():
    from fuse.plugins.distillation import MemoryBank

    def col(*v):
        return torch.tensor(v, dtype=torch.float32)[:, None]

    bank = MemoryBank(size=5, dim=1)
    assert bank.items().shape == (0, 1) and len(bank) == 0
    bank.enqueue(col(1, 2, 3))
    assert bank.items().flatten().tolist() == [1, 2, 3] and bank.ptr == 3
    bank.enqueue(col(4, 5))  # exactly full: the pointer wraps to 0
    assert bank.items().flatten().tolist() == [1, 2, 3, 4, 5] and bank.ptr == 0
    bank.enqueue(col(6, 7, 8))
    assert bank.items().flatten().tolist() == [4, 5, 6, 7, 8] and len(bank) == 5
    bank.enqueue(col(9, 10, 11, 12))  # crosses the end of the buffer
    assert bank.items().flatten().tolist() == [8, 9, 10, 11, 12]
    assert sorted(bank.valid().flatten().tolist()) == [8, 9, 10, 11, 12]
    bank.enqueue(torch.arange(20.0, 27.0)[:, None])  # more rows than the bank at once: the newest
    assert bank.items().flatten().tolist() == [22, 23, 24, 25, 26] and len(bank) == 5
    assert "queue" not in bank.state_dict()  # never saved in checkpoints
    with pytest.raises(ValueError, match="dim 1"):
        bank.enqueue(torch.zeros(2, 3))
    # state.pt carries it instead: a restored bank continues in the same order.
    again = MemoryBank(size=5, dim=1)
    again.load_resume_state(bank.resume_state())
    for b in (bank, again):
        b.enqueue(col(30, 31))
    assert again.items().flatten().tolist() == bank.items().flatten().tolist() == [24, 25, 26, 30, 31]
    partial = MemoryBank(size=5, dim=1)
    partial.enqueue(col(1, 2))
    again.load_resume_state(partial.resume_state())
    assert again.items().flatten().tolist() == [1, 2] and len(again) == 2
    with pytest.raises(ValueError, match="size"):
        MemoryBank(size=4, dim=1).load_resume_state(bank.resume_state())


# ---- distillation ------------------------------------------------------------------------

def test_distillation_matches_formula_and_fills_the_bank():
    torch.manual_seed(0)
    d = make("distillation", {"queue_size": 8}, extra_dims={"teacher": 3})
    lat = batch(n=4)
    _, embed = linear_heads()
    teacher1, teacher2 = torch.randn(4, 3), torch.randn(4, 3)
    step = Step(MODS, lat, embed=embed, extras={"teacher": teacher1})
    first = d.step_loss(step)
    # one projection (LayerNorm + Linear) shared by both students, into the teacher's space
    students = [d.projection(step.embeddings[m]) for m in MODS]
    assert first.item() == pytest.approx(py_distillation(students, teacher1, torch.empty(0, 3), 0.07), abs=1e-4)
    assert len(d.bank) == 4
    step2 = Step(MODS, lat, embed=embed, extras={"teacher": teacher2})
    second = d.step_loss(step2)  # the bank now holds teacher1 (normalised) as negatives
    students = [d.projection(step2.embeddings[m]) for m in MODS]
    bank = torch.nn.functional.normalize(teacher1, dim=-1)
    assert second.item() == pytest.approx(py_distillation(students, teacher2, bank, 0.07), abs=1e-4)
    assert len(d.bank) == 8 and d.metrics()["memory_bank_fill"] == 8
    second.backward()
    assert d.projection[1].weight.grad.abs().sum() > 0 and torch.isfinite(d.projection[1].weight.grad).all()


def test_distillation_drops_duplicate_images_from_the_negatives():
    torch.manual_seed(1)
    lat = batch(n=4)
    _, embed = linear_heads()
    teacher = torch.randn(4, 3)
    teacher[2] = 2 * teacher[0]  # the same image twice in a batch (two captions)
    for mask in (True, False):
        torch.manual_seed(2)  # the same projection both times
        d = make("distillation", {"queue_size": 16, "mask_duplicates": mask}, extra_dims={"teacher": 3})
        step = Step(MODS, lat, embed=embed, extras={"teacher": teacher})
        d.step_loss(step)  # the bank now holds this batch: a second epoch sees every image again
        students = [d.projection(step.embeddings[m]) for m in MODS]
        got = d.step_loss(step).item()
        bank = torch.nn.functional.normalize(teacher, dim=-1)
        assert got == pytest.approx(py_distillation(students, teacher, bank, 0.07, mask), abs=1e-4)
        if mask:
            masked = got
    assert masked < got  # duplicates as negatives only push the loss up


def test_distillation_students_option_and_in_batch_only():
    lat = batch(n=4)
    _, embed = linear_heads()
    teacher = torch.randn(4, 3)
    d = make("distillation", {"queue_size": 0, "students": ["text"]}, extra_dims={"teacher": 3})
    step = Step(MODS, lat, embed=embed, extras={"teacher": teacher})
    got = d.step_loss(step).item()
    want = py_distillation([d.projection(step.embeddings["text"])], teacher, torch.empty(0, 3), 0.07)
    assert got == pytest.approx(want, abs=1e-4) and d.bank is None
    assert set(d.metrics()) == {"distillation_text", "memory_bank_fill"}
    with pytest.raises(RecipeError, match=r"students \['audio'\] are not modalities"):
        make("distillation", {"students": ["audio"]}, extra_dims={"teacher": 3})


def test_distillation_in_eval_mode_leaves_the_bank_alone():
    d = make("distillation", {"queue_size": 8}, extra_dims={"teacher": 3}).eval()
    _, embed = linear_heads()
    d.step_loss(Step(MODS, batch(n=4), embed=embed, extras={"teacher": torch.randn(4, 3)}))
    assert len(d.bank) == 0


def test_distillation_without_teacher_is_a_recipe_error(tmp_path, tiny_text_model, shapes_data):
    from conftest import tiny_recipe, write_recipe

    from fuse.recipes.plan import load_plan

    with pytest.raises(RecipeError, match="needs a `teacher:` section"):
        make("distillation")
    d = make("distillation", extra_dims={"teacher": 3})
    _, embed = linear_heads()
    with pytest.raises(RecipeError, match="without teacher latents"):
        d.step_loss(Step(MODS, batch(), embed=embed))
    with pytest.raises(RecipeError, match="teacher latents of dim 3, got shape"):
        d.step_loss(Step(MODS, batch(), embed=embed, extras={"teacher": torch.zeros(6, 5)}))
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "objectives": [{"name": "infonce"}, {"name": "distillation", "weight": 0.5}]}))
    with pytest.raises(RecipeError, match=r"objectives.1 \(distillation\) needs 'teacher'"):
        load_plan(recipe)


def test_fusemix_with_a_fusion_is_a_recipe_error(tmp_path, tiny_text_model, shapes_data):
    from conftest import tiny_recipe, write_recipe

    from fuse.recipes.plan import load_plan

    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "objectives": [{"name": "fusemix"}],
        "fusion": {"name": "shared-transformer", "options": {"width": 16, "heads": 2}}}))
    with pytest.raises(RecipeError, match=r"objectives.0 \(fusemix\) works on pooled latents"):
        load_plan(recipe)


def test_composed_objectives_train_with_a_teacher_and_log_each_term(tmp_path, tiny_text_model, shapes_data):
    from click.testing import CliRunner
    from conftest import tiny_recipe, write_recipe

    from fuse.cli import cli
    from fuse.eval.metrics_file import read_metrics

    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "train.epochs": 2, "train.log_every": 1,
        "teacher": {"modality": "image", "encoder": {"name": "timm", "options": {"model": "test_vit", "pretrained": False}}},
        "objectives": [{"name": "infonce"}, {"name": "siglip", "weight": 0.1},
                       {"name": "distillation", "weight": 0.5, "options": {"queue_size": 16}}]}))
    result = CliRunner().invoke(cli, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "teacher/train: cached 24 new latents" in result.output
    rows_ = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    last = rows_[-1]
    assert {"loss/infonce", "loss/siglip", "loss/distillation", "temperature", "siglip_temperature",
            "siglip_bias", "distillation_image", "distillation_text"} <= set(last)
    total = last["loss/infonce"] + 0.1 * last["loss/siglip"] + 0.5 * last["loss/distillation"]
    assert last["loss"] == pytest.approx(total, rel=1e-5)
    assert last["loss/distillation"] == pytest.approx((last["distillation_image"] + last["distillation_text"]) / 2,
                                                      rel=1e-5)
    assert last["memory_bank_fill"] == 16


def test_fusemix_trains_end_to_end(tmp_path, tiny_text_model, shapes_data):
    from click.testing import CliRunner
    from conftest import tiny_recipe, write_recipe

    from fuse.cli import cli
    from fuse.eval.metrics_file import read_metrics

    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "train.epochs": 1, "train.log_every": 1, "data.val": None,
        "objectives": [{"name": "fusemix", "options": {"alpha": 1.0}}]}))
    result = CliRunner().invoke(cli, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    rows_ = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    lams = [r["fusemix_lambda"] for r in rows_]
    assert len(set(lams)) == len(lams) and all(0 <= v <= 1 for v in lams)  # a fresh lambda every step
    assert all(0.001 <= r["temperature"] <= 0.5 and math.isfinite(r["loss"]) for r in rows_)


# ---- torch.distributed: two gloo processes give the single-process global-batch step -----

def _objective_results(rank: int = 0, world: int = 1) -> dict:
    """Losses, head/objective gradients (averaged over ranks, as DDP does) and the bank, for
    this rank's slice of one global batch of 8."""
    import torch.distributed as dist

    lo, hi = rank * 8 // world, (rank + 1) * 8 // world
    lat = {m: x[lo:hi] for m, x in batch(n=8).items()}
    teachers = [torch.randn(8, 3, generator=torch.Generator().manual_seed(s))[lo:hi] for s in (5, 6)]
    out = {}
    for name, options, extra in (("siglip", {}, None), ("distillation", {"queue_size": 12}, {"teacher": 3})):
        torch.manual_seed(0)
        obj = make(name, options, extra_dims=extra)
        w, embed = linear_heads()
        if name == "distillation":  # a first step fills the bank with both ranks' teacher rows
            obj.step_loss(Step(MODS, lat, embed=embed, extras={"teacher": teachers[0]}))
        loss = obj.step_loss(Step(MODS, lat, embed=embed, extras={"teacher": teachers[1]}))
        loss.backward()
        grads = [p.grad.clone() for p in [*w.values(), *obj.parameters()] if p.grad is not None]
        if world > 1:
            for g in grads:
                dist.all_reduce(g)
                g /= world
        out[name] = {"loss": loss.detach(), "grads": grads}
        if name == "distillation":
            out[name]["bank"] = obj.bank.items().clone()
    torch.manual_seed(rank)  # different RNG states: the broadcast must still give one lambda
    out["fusemix_lambda"] = make("fusemix").draw_lambda()
    return out


def _ddp_worker(rank: int, world: int, store: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.save(_objective_results(rank, world), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_compute_the_single_process_losses_gradients_and_bank(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    single = _objective_results()
    torch.manual_seed(0)
    rank0_lambda = make("fusemix").draw_lambda()
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
        for name in ("siglip", "distillation"):
            assert torch.allclose(got[name]["loss"], single[name]["loss"], atol=1e-6), (r, name)
            assert len(got[name]["grads"]) == len(single[name]["grads"])
            for g, s in zip(got[name]["grads"], single[name]["grads"]):
                assert torch.allclose(g, s, atol=1e-6), (r, name)
        # every rank enqueued both ranks' rows, in rank order: the single-process bank
        assert torch.equal(got["distillation"]["bank"], single["distillation"]["bank"])
        assert float(got["fusemix_lambda"]) == float(rank0_lambda)


@pytest.mark.parametrize("name, options, extra", [("fusemix", {"pairing": "permutation"}, None),
                                                  ("fusemix", {"pairing": "halves"}, None),
                                                  ("distillation", {"queue_size": 8}, {"teacher": 3}),
                                                  ("siglip", {}, None), ("infonce", {}, None)])
def test_a_steps_loss_can_be_recomputed_from_its_draws(name, options, extra):
    """Randomness is drawn once (draw) and side effects wait for commit, so computing the loss
    again on the same step and draws gives the same value (gradient caching relies on it)."""
    torch.manual_seed(0)
    obj = make(name, options, extra_dims=extra)
    _, embed = linear_heads()
    teacher = torch.randn(8, 3, generator=torch.Generator().manual_seed(5))
    step = Step(MODS, batch(n=8), embed=embed, extras={"teacher": teacher})
    draws = obj.draw(step)
    first = obj(Step(MODS, step.latents, embed=embed, extras=step.extras), draws)
    torch.manual_seed(123)  # a different global RNG state changes nothing once the draws are taken
    again = obj(Step(MODS, step.latents, embed=embed, extras=step.extras), draws)
    assert torch.equal(first, again)
    if name == "distillation":
        assert len(obj.bank) == 0  # forward never enqueues
        obj.commit(step, draws)
        assert len(obj.bank) == 8
