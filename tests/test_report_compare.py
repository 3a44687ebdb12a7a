"""`fuse report --compare` on a sweep's folder as the docs glob it: the .point.json markers are left out with a
note, the recipe fields that differ are one line each (path: old → new), the curves are overlaid (one chart
per metric); the retrieval page shows both directions with each hit's score and the correct item's rank."""

from __future__ import annotations

import glob
import json
import re
import shutil

import yaml
from click.testing import CliRunner

from fuse.cli import cli


def _sweep(run, root):
    """A sweep's folder: two runs (copies of one trained run, the second with another temperature and other
    curves) and the .point.json marker beside each, as `fuse sweep` leaves them."""
    for name, temperature, shift in (("000-t0.07", 0.07, 0.0), ("001-t0.05", 0.05, 5.0)):
        shutil.copytree(run, root / name, ignore=shutil.ignore_patterns("checkpoints", "export"))
        recipe = yaml.safe_load((root / name / "recipe.yaml").read_text())
        recipe["objectives"][0]["options"] = {"temperature": temperature}
        (root / name / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for row in rows:
            row.update({k: v + shift for k, v in row.items() if "R@" in k})
        (root / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (root / f"{name}.point.json").write_text(json.dumps({"done": True}))
    return root


def test_compare_a_sweep_by_its_documented_glob(trained_shapes_export, tmp_path):
    root = _sweep(trained_shapes_export.parent, tmp_path / "sweep")
    paths = sorted(glob.glob(str(root / "000-*")) + glob.glob(str(root / "001-*")))
    assert len(paths) == 4            # each run folder and its .point.json
    out = tmp_path / "sweep.html"
    result = CliRunner().invoke(cli, ["report", "--compare", *paths, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"left out {root / '000-t0.07.point.json'}: neither a run folder nor a leaderboard" in result.output
    assert "wrote" in result.output and "(2 of the 4 paths)" in result.output
    page = out.read_text()
    differ = re.search(r"<ul id=differ>(.*?)</ul>", page, re.S).group(1)
    # the one field that changed, not the objectives list; output_dir is never a difference
    assert re.findall(r"<li>(.*?)</li>", differ) == ["<code>objectives[0].options.temperature</code>: 0.07 → 0.05"]
    charts = re.findall(r'<img alt="curve: ([^"]+)"', page)
    assert charts[:3] == ["loss", "temperature", "lr"] and "mean/R@1" in charts and "text_to_image/R@1" in charts


def test_compare_refuses_what_is_not_two_runs_in_one_line(trained_shapes_export, tmp_path):
    root = _sweep(trained_shapes_export.parent, tmp_path / "sweep")
    result = CliRunner().invoke(cli, ["report", "--compare", str(root / "000-t0.07"), str(root / "000-t0.07.point.json"),
                                      "-o", str(tmp_path / "x.html")])
    assert result.exit_code == 2 and "--compare needs two or more finished run folders or a leaderboard" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "x.html").exists()
    bad = tmp_path / "leaderboard.json"
    bad.write_text('{"rows": 3}')
    result = CliRunner().invoke(cli, ["report", "--compare", str(bad), "-o", str(tmp_path / "x.html")])
    assert result.exit_code == 2 and "is not a leaderboard fuse eval wrote" in result.output


def test_retrieval_page_shows_both_directions_with_scores_and_ranks(trained_shapes_export, shapes_data, tmp_path):
    import fuse

    out = tmp_path / "r.html"
    result = CliRunner().invoke(cli, ["report", str(trained_shapes_export), "--data", str(shapes_data["val"]),
                                      "-o", str(out), "--samples", "4"])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    for key, title in (("examples", "text → image: sampled queries"), ("examples-back", "image → text: sampled queries"),
                       ("failures-back", "image → text: worst-ranked queries")):
        assert f'<section id="{key}"><h2>{title}</h2>' in page
    # each sampled text query: its correct image's rank and score, as the model scores them
    model = fuse.load(trained_shapes_export)
    rows = [json.loads(line) for line in shapes_data["val"].read_text().splitlines()]
    images = [str((shapes_data["val"].parent / r["image"]).resolve()) for r in rows]
    sims = model.embed("text", [r["text"] for r in rows]) @ model.embed("image", images).T
    examples = re.search(r'<section id="examples">(.*?)</section>', page, re.S).group(1)
    shown = [i for i, r in enumerate(rows) if f"<b>{r['text']}</b>" in examples]
    assert len(shown) == 4 and examples.count("score ") >= 4 * 6     # each of the top 5 and the correct item
    for i in shown:
        rank = int((sims[i] > sims[i, i]).sum() + ((sims[i] == sims[i, i]).nonzero().flatten() < i).sum()) + 1
        assert f"<b>{rows[i]['text']}</b> <span class=muted>(correct item at rank {rank}, score {sims[i, i]:.3f})" \
            in examples
