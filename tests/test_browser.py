"""The built HTML, as a reader's browser shows it, with no network.

Headless Chromium opens chapter pages from _build/html through file:// URLs.
The pages must typeset their math and draw their widgets from the site's own
copies of MathJax and the widget manager, show their figures, and offer a
Colab button that opens the same notebook in the repository.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
CHAPTERS = sorted(p for p in (ROOT / "book").glob("*.ipynb"))
CDN_HOSTS = ("cdn.jsdelivr.net", "cdnjs.cloudflare.com", "unpkg.com", "polyfill.io")

pytestmark = pytest.mark.browser


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    skip_or_fail("headless Chromium is not installed (apt-get install chromium)")


def rendered_dom(page: Path) -> str:
    """The page's DOM after scripts ran (math typeset, widgets drawn)."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=15000",
             "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module", params=CHAPTERS, ids=lambda p: p.stem)
def chapter(request):
    page = HTML / "book" / f"{request.param.stem}.html"
    if not page.exists():
        skip_or_fail(f"{page.relative_to(ROOT)} is missing: build the book first (bash scripts/build-book.sh)")
    return request.param, page, rendered_dom(page)


def has_math(notebook) -> bool:
    """Whether any Markdown cell of the chapter writes TeX between dollar signs."""
    cells = json.loads(notebook.read_text())["cells"]
    return any(re.search(r"\$[^$]+\$", "".join(c["source"])) for c in cells if c["cell_type"] == "markdown")


def test_math_is_typeset(chapter):
    notebook, page, dom = chapter
    math_spans = re.findall(r'<(span|div) class="math[^"]*">(.*?)</\1>', dom, flags=re.DOTALL)
    if has_math(notebook):
        assert "mjx-container" in dom, f"{page.name}: MathJax did not typeset anything"
    raw = [body[:80] for _, body in math_spans if "mjx-container" not in body]
    assert not raw, f"{page.name}: math left as raw TeX: {raw[:3]}"
    assert not re.search(r"\\\(|\\\[|\$\$", re.sub(r"<(script|style|pre|code)\b.*?</\1>", "", dom, flags=re.DOTALL)), (
        f"{page.name}: raw TeX delimiters are left in the page"
    )


def test_figures_are_present(chapter):
    _, page, dom = chapter
    images = re.findall(r'<img[^>]*src="(\.\./_images/[^"]+\.png)"', dom)
    assert images, f"{page.name}: no figure"
    for src in images:
        assert (page.parent / src).resolve().exists(), f"{page.name}: figure {src} is not in the site"


def test_widgets_are_drawn_from_the_site(chapter):
    path, page, dom = chapter
    if '"application/vnd.jupyter.widget-view+json"' not in path.read_text():
        pytest.skip(f"{path.name} has no widgets")
    assert "widget-slider" in dom or "jupyter-widgets" in dom, f"{page.name}: the widgets were not drawn"
    assert "blob:" in dom or "data:image" in dom, f"{page.name}: the interactive figure's frames were not drawn"


def test_no_asset_comes_from_a_cdn(chapter):
    _, page, _ = chapter
    html = page.read_text()
    sources = re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"', html)
    remote = [s for s in sources if any(host in s for host in CDN_HOSTS)]
    assert not remote, f"{page.name} loads from a CDN: {remote}"


def test_colab_button_opens_this_notebook(chapter):
    path, page, dom = chapter
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repository = config["repository"]["url"].removeprefix("https://github.com/")
    notebook = path.relative_to(ROOT).as_posix()
    expected = f"https://colab.research.google.com/github/{repository}/blob/{config['repository']['branch']}/{notebook}"
    links = re.findall(r'href="(https://colab\.research\.google\.com[^"]*)"', dom)
    assert expected in links, f"{page.name}: Colab button links to {links}, expected {expected}"
