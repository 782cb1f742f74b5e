"""The built book in a real headless browser (Debian's chromium + chromedriver).

Builds the HTML from the committed chapter notebooks (no execution, as the
README's book command does after papermill), opens every chapter page,
checks that it shows its figures and no error output, moves a static slider
with the keyboard and checks that the shown figure changes, and saves a
screenshot of each page under ``_build/screenshots/``. Math must be typeset by
the MathJax copy inside the build (``make mathjax``), with no raw TeX left and
no script loaded from another host, so the book reads offline; the API
reference page must list the library's classes.
"""
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from prunedyn.book.build import build_html, chapter_notebooks

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium and chromium-driver (make test installs them as root)")
    pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)", allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def book():
    subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "mathjax"], check=True)  # idempotent
    build_html(ROOT)
    assert (HTML / "index.html").exists() or (HTML / "book" / "intro.html").exists()
    return HTML


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="prunedyn-chromium-")
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1280,2000", f"--user-data-dir={profile}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


CHAPTERS = [p.relative_to(ROOT).with_suffix(".html") for p in chapter_notebooks(ROOT)]


def test_every_chapter_is_in_the_book(book):
    assert len(CHAPTERS) >= 3
    missing = [str(p) for p in CHAPTERS if not (book / p).exists()]
    assert not missing, f"chapters without a page: {missing}"


SUMMARY_PAGES = ("09-conclusions", "10-own-model")


@pytest.mark.parametrize("page", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_page_renders_figures_and_a_working_slider(book, browser, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get((book / page).as_uri())
    assert browser.find_elements(By.TAG_NAME, "h1"), "page has no title"
    errors = browser.find_elements(By.CSS_SELECTOR, ".cell_output .output.traceback, .cell_output .output.error, .cell_output .stderr")
    assert not errors, f"error output on {page}: {errors[0].text[:300]}"
    figures = browser.execute_script(
        "return Array.from(document.querySelectorAll('.cell_output img'))"
        ".filter(im => im.complete && im.naturalWidth > 0).length"
    )
    # the study's chapters have several figures and a slider; the closing chapter (a claims table and
    # its picture) and the usage page (one training run) have at least one figure
    summary_page = page.stem in SUMMARY_PAGES
    assert figures >= (1 if summary_page else 2), f"{page} shows {figures} rendered figures"
    SHOTS.mkdir(parents=True, exist_ok=True)
    sliders = browser.find_elements(By.CSS_SELECTOR, ".prunedyn-slider")
    if summary_page and not sliders:
        browser.save_screenshot(str(SHOTS / f"{page.stem}.png"))
        return
    assert sliders, f"{page} has no static slider"
    slider = sliders[0]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", slider)
    visible = "return Array.from(arguments[0].querySelectorAll('.pds-frame')).filter(im => im.style.display !== 'none').map(im => im.src.slice(-64))"
    rng = slider.find_element(By.CSS_SELECTOR, "input.pds-input")
    label = lambda: slider.find_element(By.CSS_SELECTOR, ".pds-value").text
    rng.click()
    rng.send_keys(Keys.HOME)
    first, first_label = browser.execute_script(visible, slider), label()
    rng.send_keys(Keys.END)
    last, last_label = browser.execute_script(visible, slider), label()
    assert len(first) == 1 and len(last) == 1, "exactly one frame is shown at a time"
    assert first != last and first_label != last_label, "moving the slider did not change the figure"
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / f"{page.stem}.png"))



# ---------------------------------------------------------------- code and results fit the page

# Every code block, printed output and result table of the page, collapsed cells opened first: the
# ones whose box is wider than what it shows (they scroll sideways). A table is measured by the box
# around it (a table does not scroll itself) and against the text column.
SIDEWAYS = r"""
document.querySelectorAll('details').forEach(d => { d.open = true; });
document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
const column = document.querySelector('article').getBoundingClientRect();
const out = [];
for (const el of document.querySelectorAll('.cell_input pre, .cell_output pre, .cell_output table')) {
  const box = el.tagName === 'TABLE' ? el.parentElement : el;
  if (!box.getClientRects().length) continue;  // not rendered (e.g. display: none)
  const wide = box.scrollWidth > box.clientWidth + 1
    || el.getBoundingClientRect().right > column.right + 1;
  if (wide) {
    const line = el.innerText.split('\n').reduce((a, b) => (b.length > a.length ? b : a), '');
    out.push(`${el.tagName.toLowerCase()} in ${el.closest('.cell_output') ? 'output' : 'code'}: `
      + `${box.scrollWidth} px in ${box.clientWidth} px; widest line: ${line.slice(0, 120)}`);
  }
}
return out;
"""


@pytest.mark.parametrize("page", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_no_code_or_output_block_scrolls_sideways(book, browser, page):
    """At a 1280-pixel window every chapter's code cells (formatted to 100 columns), printed
    outputs (no line over 100 characters) and result tables fit the text column."""
    browser.set_window_size(1280, 2000)
    browser.get((book / page).as_uri())
    n = browser.execute_script(
        "return document.querySelectorAll('.cell_input pre, .cell_output pre, .cell_output table')"
        ".length"
    )
    assert n, f"{page} has no code or output blocks"
    wide = browser.execute_script(SIDEWAYS)
    assert not wide, f"{page}: {len(wide)} of {n} blocks scroll sideways: " + "; ".join(wide[:5])


# ---------------------------------------------------------------- offline math and scripts

MATH_PAGES = [Path("book/intro.html")] + CHAPTERS

# Visible text outside code, scripts and MathJax's own output.
VISIBLE_TEXT = r"""
const root = document.querySelector('article') || document.body;
const skip = 'pre, code, script, style, textarea, mjx-container, .highlight, .cell_input';
const walk = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
const out = [];
while (walk.nextNode()) {
  const el = walk.currentNode.parentElement;
  if (el && !el.closest(skip) && el.checkVisibility()) out.push(walk.currentNode.nodeValue);
}
return out.join(' ');
"""
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\$[^$\s][^$]*?\$")


def is_remote(url: str) -> bool:
    return bool(re.match(r"^([a-z][a-z0-9+.-]*:)?//", url.strip(), re.I)) and not url.strip().lower().startswith("file:")


class _ScriptSources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "script" and dict(attrs).get("src"):
            self.sources.append(dict(attrs)["src"])


def test_no_page_loads_a_remote_script(book):
    remote = {}
    pages = sorted(book.rglob("*.html"))
    assert pages
    for page in pages:
        parser = _ScriptSources()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        bad = [src for src in parser.sources if is_remote(src)]
        if bad:
            remote[str(page.relative_to(book))] = bad
    assert not remote, f"scripts from other hosts (the book must read offline): {remote}"
    assert (book / "_static" / "mathjax" / "tex-chtml.js").exists(), "MathJax is not in the build (make mathjax)"


def wait_for_mathjax(browser) -> str:
    browser.set_script_timeout(60)
    return browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) { done('MathJax did not load'); return; }"
        "MathJax.startup.promise.then(() => done('ok'), e => done('MathJax failed: ' + e));"
    )


@pytest.mark.parametrize("page", MATH_PAGES, ids=[p.stem for p in MATH_PAGES])
def test_math_is_typeset_by_the_local_mathjax(book, browser, page):
    from selenium.webdriver.common.by import By

    browser.get((book / page).as_uri())
    n_math = len(browser.find_elements(By.CSS_SELECTOR, ".math"))
    if not n_math:
        pytest.skip(f"{page} has no math")
    assert wait_for_mathjax(browser) == "ok"
    scripts = browser.execute_script("return Array.from(document.scripts).map(s => s.src).filter(Boolean)")
    assert not [s for s in scripts if is_remote(s)], f"{page} loads remote scripts: {scripts}"
    assert any(s.split("?")[0].endswith("_static/mathjax/tex-chtml.js") for s in scripts), scripts
    typeset = browser.execute_script("return document.querySelectorAll('.math mjx-container').length")
    assert typeset >= n_math, f"{page}: {typeset} of {n_math} math elements typeset"
    errors = browser.find_elements(By.CSS_SELECTOR, "mjx-merror")
    assert not errors, f"{page}: TeX errors: {[e.get_attribute('data-mjx-error') for e in errors[:3]]}"
    text = browser.execute_script(VISIBLE_TEXT)
    raw = RAW_TEX.findall(text)
    if raw:
        k = RAW_TEX.search(text).start()
        pytest.fail(f"{page} shows raw TeX {[r[:60] for r in raw[:5]]} in: ...{text[max(0, k - 120):k + 120]}...")


def test_api_reference_lists_the_pruner(book, browser):
    from selenium.webdriver.common.by import By

    page = book / "book" / "api.html"
    assert page.exists(), "no API reference page"
    browser.get(page.as_uri())
    assert "API reference" in browser.title
    entry = browser.find_elements(By.ID, "prunedyn.core.pruning.StochasticWeightPruner")
    assert entry and "StochasticWeightPruner" in entry[0].text
    assert entry[0].find_elements(By.XPATH, "following-sibling::dd[1]//p"), "StochasticWeightPruner has no docstring"
    for name in ("prunedyn.core.regularization.make_regularizer", "prunedyn.structure.surgery.compact",
                 "prunedyn.models.UNet"):
        assert browser.find_elements(By.ID, name), f"{name} is not in the API reference"


def test_generated_markdown_tables_render_as_tables(book):
    """A chapter's table printed as Markdown (display(Markdown(...))) must become an HTML table:
    with MyST-NB's default CommonMark output format it renders as a paragraph of pipes."""
    flat = {}
    for page in CHAPTERS:
        html = (book / page).read_text()
        flat[str(page)] = len(re.findall(r"<p>\|[^<]*\|", html))
    assert not any(flat.values()), {k: v for k, v in flat.items() if v}
    assert (book / "chapters" / "06-vgg16-cifar10.html").read_text().count("<table") >= 3  # the recorded comparison
