"""The built book in a real headless browser (Debian's chromium + chromedriver).

Builds the HTML from the committed chapter notebooks (no execution, as the
README's book command does after papermill), opens every chapter page,
checks that it shows its figures and no error output, moves a static slider
with the keyboard and checks that the shown figure changes, and saves a
screenshot of each page under ``_build/screenshots/``.
"""
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from prunedyn.run.book import build_html, chapter_notebooks

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
    assert figures >= 2, f"{page} shows {figures} rendered figures"

    sliders = browser.find_elements(By.CSS_SELECTOR, ".prunedyn-slider")
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
