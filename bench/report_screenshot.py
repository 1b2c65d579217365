"""Open a kagglecv HTML report in headless Chromium and save a screenshot, so a person can look at it.

    python bench/report_screenshot.py runs/report.html --out bench/out/report.png [--full-page]

Needs a Chromium (Debian: apt-get install chromium) and the playwright package (in kagglecv's dev extra); it drives
the system browser, so nothing is downloaded. Prints the leaderboard rows and how many images loaded.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def screenshot(page_path: Path, out: Path, full_page: bool, width: int = 1400, height: int = 1000) -> dict:
    executable = find_chromium()
    if executable is None:
        raise SystemExit("no Chromium found (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(Path(page_path).resolve().as_uri())
        page.wait_for_load_state("load")
        facts = page.evaluate("""() => ({
            rows: Array.from(document.querySelectorAll('table.leaderboard tbody tr')).map(r => r.cells[1].textContent),
            images: document.images.length,
            loaded: Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length})""")
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=full_page)
        browser.close()
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/out/report.png"))
    parser.add_argument("--full-page", action="store_true")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()
    facts = screenshot(args.page, args.out, args.full_page, args.width, args.height)
    print(f"{len(facts['rows'])} leaderboard rows: {', '.join(facts['rows'])}")
    print(f"{facts['loaded']} of {facts['images']} images loaded; screenshot {args.out}")


if __name__ == "__main__":
    main()
