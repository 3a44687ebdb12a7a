"""`fuse report`: the page is self-contained, and a real headless Chromium (Debian's package) shows every
section and image with no network request; the modality gap is checked against numpy."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fuse.cli import cli

SECTIONS = ("recipe", "curves", "table", "examples", "failures", "examples-back", "failures-back", "gap")

PROBE = """<script>
const violations = [];
document.addEventListener('securitypolicyviolation', e => violations.push(e.blockedURI));
window.addEventListener('load', () => setTimeout(() => {
  const imgs = [...document.images];
  const out = {images: imgs.length, broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
               requests: performance.getEntriesByType('resource').map(e => e.name), violations,
               sections: [...document.querySelectorAll('section')].map(s => s.id)};
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 200));
</script>"""


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    return exe


def open_in_chromium(page, tmp_path) -> dict:
    """Load a copy of the page with a probe script (the page's CSP allows no script) and read what it saw."""
    text = page.read_text().replace("default-src 'none'", "default-src 'none'; script-src 'unsafe-inline'")
    probe = tmp_path / "probed.html"
    probe.write_text(text.replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom)
    assert found, dom[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.fixture(scope="module")
def report(trained_shapes_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = CliRunner().invoke(cli, ["report", str(trained_shapes_export.parent), "-o", str(out), "--samples", "4"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_page_is_self_contained(report):
    page, _ = report
    text = page.read_text()
    assert not re.search(r'(src|href)="(?!data:)', text)  # every image and player inlined
    assert "http-equiv=\"Content-Security-Policy\"" in text and "default-src 'none'" in text
    for key in SECTIONS:
        assert f'<section id="{key}">' in text
    assert text.count('class="hit ok"') >= 1  # some correct item is marked


def test_chromium_shows_every_section_and_image_without_network(report, tmp_path):
    page, _ = report
    seen = open_in_chromium(page, tmp_path)
    assert seen["sections"] == list(SECTIONS)
    assert seen["images"] > 10 and seen["broken"] == []
    assert seen["requests"] == [] and seen["violations"] == []


def test_modality_gap_is_the_distance_between_centroids(report, trained_shapes_export, shapes_data):
    import fuse
    from fuse.data.manifest import load_pairs

    _, output = report
    model = fuse.load(trained_shapes_export)
    data = load_pairs(shapes_data["val"], ("image", "text"), ("image",))
    a = model.embed("image", data.values["image"]).numpy()
    b = model.embed("text", data.values["text"]).numpy()
    want = np.linalg.norm(a.mean(0) - b.mean(0))
    assert f"modality gap {want:.3f}" in output


def test_compare_and_bad_input(report, trained_shapes_export, tmp_path, shapes_data):
    run = trained_shapes_export.parent
    out = tmp_path / "c.html"
    result = CliRunner().invoke(cli, ["report", "--compare", str(run), str(run), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert open_in_chromium(out, tmp_path)["sections"] == ["table", "recipe", "curves"]
    result = CliRunner().invoke(cli, ["report", "--compare", str(run), str(run), "--task", "zeroshot",
                                      "-o", str(tmp_path / "cz.html")])
    assert result.exit_code == 2 and "--data and --task are for one run's report" in result.output
    result = CliRunner().invoke(cli, ["report", str(trained_shapes_export), "-o", str(tmp_path / "x.html")])
    assert result.exit_code == 2 and "has no validation data to show: give --data MANIFEST" in result.output
    result = CliRunner().invoke(cli, ["report", str(trained_shapes_export), "--data", str(shapes_data["val"]),
                                      "-o", str(tmp_path / "e.html")])
    assert result.exit_code == 0 and '<section id="recipe">' not in (tmp_path / "e.html").read_text()


ZEROSHOT_SECTIONS = ("recipe", "curves", "table", "zeroshot", "confusion", "per-class", "examples", "failures")


@pytest.fixture(scope="module")
def zeroshot_report(trained_shapes_export, shapes_data, tmp_path_factory):
    """The shapes' held-out images labelled by colour ("a red circle" -> red), reported with --task zeroshot."""
    folder = tmp_path_factory.mktemp("zeroshot")
    labels = folder / "colours.jsonl"
    rows = [json.loads(line) for line in shapes_data["val"].read_text().splitlines()]
    labels.write_text("".join(json.dumps({"image": str(shapes_data["val"].parent / r["image"]),
                                          "label": r["text"].split()[1]}) + "\n" for r in rows))
    out = folder / "zeroshot.html"
    result = CliRunner().invoke(cli, ["report", str(trained_shapes_export.parent), "--task", "zeroshot", "--data",
                                      str(labels), "--templates", "short", "-o", str(out), "--samples", "4"])
    assert result.exit_code == 0, result.output
    return out, labels, result.output


def _html_table(text: str, table_id: str) -> list[list[str]]:
    body = re.search(rf'<table id="{table_id}">(.*?)</table>', text, re.S).group(1)
    return [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_zeroshot_confusion_matrix_matches_a_brute_force_count(zeroshot_report, trained_shapes_export):
    """Counts computed here with numpy from the model's embeddings: prompts normalised, averaged per class,
    normalised again; the first highest-scoring class wins."""
    import fuse
    from fuse.eval.zeroshot import load_templates

    page, labels, output = zeroshot_report
    rows = [json.loads(line) for line in labels.read_text().splitlines()]
    classes = sorted({r["label"] for r in rows})
    templates = load_templates("short")
    model = fuse.load(trained_shapes_export)
    items = model.embed("image", [r["image"] for r in rows]).numpy().astype(np.float64)
    prompts = model.embed("text", [t.replace("{}", c) for c in classes for t in templates]).numpy().astype(np.float64)
    prompts /= np.linalg.norm(prompts, axis=1, keepdims=True)
    per_class = prompts.reshape(len(classes), len(templates), -1).mean(1)
    per_class /= np.linalg.norm(per_class, axis=1, keepdims=True)
    predicted = (items @ per_class.T).argmax(1)
    want = np.zeros((len(classes), len(classes)), dtype=int)
    for r, p in zip(rows, predicted):
        want[classes.index(r["label"]), p] += 1

    table = _html_table(page.read_text(), "confusion-counts")
    assert table[0][1:] == classes and [r[0] for r in table[1:]] == classes
    assert np.array_equal(np.array([[int(v) for v in r[1:]] for r in table[1:]]), want)
    assert 0 < np.trace(want) < len(rows)  # the fixture has hits and misses, so the matrix is not trivial
    top1 = 100 * np.trace(want) / len(rows)
    assert f"top-1 {top1:.1f}%" in output and f"<b id=top1>{top1:.1f}%</b>" in page.read_text()
    report = fuse.eval.run_zeroshot(model, labels, templates="short", baselines=False)  # `fuse eval` agrees
    assert report["metrics"]["model"]["top1"] == pytest.approx(top1)
    accuracy = {r[0]: float(r[2]) for r in _html_table(page.read_text(), "per-class-table")[1:]}
    assert accuracy == {c: pytest.approx(100 * want[i, i] / want[i].sum(), abs=0.05) for i, c in enumerate(classes)}


def test_chromium_shows_the_zeroshot_page_without_network(zeroshot_report, tmp_path):
    page, _, _ = zeroshot_report
    seen = open_in_chromium(page, tmp_path)
    assert seen["sections"] == list(ZEROSHOT_SECTIONS)
    assert "confusion matrix" not in seen["broken"] and seen["broken"] == []
    assert seen["images"] > 8 and seen["requests"] == [] and seen["violations"] == []


@pytest.mark.parametrize("args, message", [
    (["--task", "zeroshot"], "--task zeroshot needs --data LABELS.jsonl"),
    (["--classes", "classes.txt"], "are for --task zeroshot"),
    (["--task", "zeroshot", "--data", "LABELS", "--templates", "missing.txt"], "Templates 'missing.txt' not found"),
    (["--task", "zeroshot", "--data", "LABELS", "--classes", "missing.txt"], "--classes file not found"),
    (["--task", "zeroshot", "--data", "LABELS", "--label-field", "nope"], "record has no 'nope' field"),
])
def test_zeroshot_bad_input_is_one_clear_line(zeroshot_report, trained_shapes_export, tmp_path, args, message):
    _, labels, _ = zeroshot_report
    args = [str(labels) if a == "LABELS" else a for a in args]
    result = CliRunner().invoke(cli, ["report", str(trained_shapes_export.parent), *args,
                                      "-o", str(tmp_path / "x.html")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.html").exists()


def test_out_replaces_only_a_page_fuse_report_wrote(report, trained_shapes_export, tmp_path):
    page, _ = report
    theirs = tmp_path / "notes.html"
    theirs.write_text("<html>my notes</html>")
    run = str(trained_shapes_export.parent)
    result = CliRunner().invoke(cli, ["report", "--compare", run, run, "-o", str(theirs)])
    assert result.exit_code == 2 and "exists and was not written by fuse report" in result.output
    assert theirs.read_text() == "<html>my notes</html>"
    copied = tmp_path / "copied.html"
    copied.write_text(page.read_text())  # a copy of a fuse page proves nothing: fuse did not write it there
    result = CliRunner().invoke(cli, ["report", "--compare", run, run, "-o", str(copied)])
    assert result.exit_code == 2 and "cannot prove it wrote it" in result.output
    ours = tmp_path / "ours.html"
    for _ in range(2):  # a page fuse wrote at that path (its record beside it): replaced
        result = CliRunner().invoke(cli, ["report", "--compare", run, run, "-o", str(ours)])
        assert result.exit_code == 0, result.output
    assert '<section id="recipe">' in ours.read_text() and '<section id="gap">' not in ours.read_text()


def test_compare_puts_two_different_runs_side_by_side(trained_shapes_export, tmp_path):
    """Not a run with itself: b differs in optim.lr and its final R@1, and each column shows its own run's."""
    import yaml

    run = trained_shapes_export.parent
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(run, a)
    shutil.copytree(run, b)
    recipe = yaml.safe_load((b / "recipe.yaml").read_text())
    recipe["optim"]["lr"] = 0.5
    (b / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    results = json.loads((b / "eval.json").read_text())
    results["after"]["mean/R@1"] = 12.345
    (b / "eval.json").write_text(json.dumps(results))
    r_a = json.loads((a / "eval.json").read_text())["after"]["mean/R@1"]
    out = tmp_path / "c.html"
    result = CliRunner().invoke(cli, ["report", "--compare", str(a), str(b), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    rows = re.findall(r"<li><code>([^<]*)</code>: ([^<]*)</li>", text.split('id="recipe"')[1].split("</section>")[0])
    assert rows == [("optim.lr", f'{yaml.safe_load((a / "recipe.yaml").read_text())["optim"]["lr"]} → 0.5')]
    table = text.split('id="table"')[1].split("</section>")[0]
    assert "12.3" in table and f"{r_a:.1f}" in table


def test_report_r1_is_eval_json_r1_for_the_same_model_and_data(trained_shapes_export, shapes_data, tmp_path):
    """One metric, one implementation: the page's R@1 (text -> image) is fuse eval's, ties included (each image
    twice under two names, so a caption's positive ties with a copy that is not its positive)."""
    root = Path(shapes_data["val"]).parent
    lines = []
    for line in Path(shapes_data["val"]).read_text().splitlines():
        rec = json.loads(line)
        copy = tmp_path / ("copy-" + Path(rec["image"]).name)
        shutil.copyfile(root / rec["image"], copy)
        lines.append(json.dumps({**rec, "image": str(copy), "text": "copy of " + rec["text"]}))
        lines.append(json.dumps({**rec, "image": str(root / rec["image"])}))
    data = tmp_path / "ties.jsonl"
    data.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(cli, ["eval", str(trained_shapes_export), "--data", str(data), "--json",
                                      "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    want = json.loads(result.stdout)["metrics"]["model"]["text_to_image/R@1"]
    page = CliRunner().invoke(cli, ["report", str(trained_shapes_export), "--data", str(data), "--samples", "24",
                                    "-o", str(tmp_path / "p.html")])
    assert page.exit_code == 0, page.output
    assert f"R@1 {want:.1f}%" in page.output, (want, page.output)
    # every query's rank on the page is the documented rule's, from numpy: ties go to the lower index
    import fuse
    from fuse.data.manifest import load_pairs

    model = fuse.load(trained_shapes_export)
    pairs = load_pairs(data, ("image", "text"), ("image",))
    text, image = (model.embed(m, pairs.values[m]).double().numpy() for m in ("text", "image"))
    scores = text @ image.T
    ti, ii = pairs.modalities.index("text"), pairs.modalities.index("image")
    ranks = []
    for q in range(len(pairs.values["text"])):
        pos = [int(r[ii]) for r in pairs.pairs.tolist() if r[ti] == q]
        best = max(pos, key=lambda j: (scores[q, j], -j))
        ranks.append(int(((scores[q] > scores[q, best]) | ((scores[q] == scores[q, best]) &
                                                          (np.arange(len(scores[q])) < best))).sum()) + 1)
    examples = (tmp_path / "p.html").read_text().split('id="examples"')[1].split("</section>")[0]
    assert [int(r) for r in re.findall(r"correct item at rank (\d+)", examples)] == ranks
