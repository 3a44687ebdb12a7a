"""`fuse report`: the page is self-contained, and a real headless Chromium (Debian's package) shows every
section and image with no network request; the modality gap is checked against numpy."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from fuse.cli import cli

SECTIONS = ("recipe", "curves", "table", "examples", "failures", "gap")

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
    result = CliRunner().invoke(cli, ["report", str(trained_shapes_export), "-o", str(tmp_path / "x.html")])
    assert result.exit_code == 2 and "has no validation data to show: give --data MANIFEST" in result.output
    result = CliRunner().invoke(cli, ["report", str(trained_shapes_export), "--data", str(shapes_data["val"]),
                                      "-o", str(tmp_path / "e.html")])
    assert result.exit_code == 0 and '<section id="recipe">' not in (tmp_path / "e.html").read_text()
