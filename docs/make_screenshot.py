"""Retake docs/play.png: the `doodle play` page mid-game, in headless Chromium (Debian's `chromium`).

Plays two rounds of a game (a circle, a square), then starts drawing a shape and takes the picture while the
clock runs.
Usage: python docs/make_screenshot.py --model RUN [--out docs/play.png]   (RUN: e.g. a configs/offline.yaml run)
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from doodle.play import make_app, running

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def polygon(cx, cy, r, k, turns=1.0, start=-90.0, n_per_side=6, wobble=0.0):
    """Points along a hand-drawn-looking polygon (k corners), `turns` of the way round."""
    pts = []
    corners = [(cx + r * math.cos(math.radians(start + 360 * i / k)), cy + r * math.sin(math.radians(start + 360 * i / k)))
               for i in range(k + 1)]
    sides = int(round(k * turns))
    for i in range(sides):
        (x0, y0), (x1, y1) = corners[i], corners[i + 1]
        for j in range(n_per_side):
            t = j / n_per_side
            pts.append((x0 + t * (x1 - x0) + wobble * math.sin(7 * t + i), y0 + t * (y1 - y0) + wobble * math.cos(5 * t + i)))
    pts.append(corners[sides])
    return pts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("play.png"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running(make_app(args.model, Path(tmp) / "mine")) as url, \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800}, device_scale_factor=1)

        def draw(strokes):
            box = page.locator("#pad").bounding_box()
            size = box["width"]
            for stroke in strokes:
                page.mouse.move(box["x"] + stroke[0][0] * size, box["y"] + stroke[0][1] * size)
                page.mouse.down()
                for x, y in stroke[1:]:
                    page.mouse.move(box["x"] + x * size, box["y"] + y * size)
                page.mouse.up()
            page.wait_for_selector("body[data-guessing='0']")

        def until(condition: str) -> None:  # polled: the page's CSP forbids wait_for_function's eval
            for _ in range(1500):  # 30 s: a round not won runs out its clock
                if page.evaluate(condition):
                    return
                page.wait_for_timeout(20)
            raise SystemExit(f"the page never got to {condition}")

        rounds = [("circle", polygon(.5, .5, .3, 24, n_per_side=2, wobble=.004)),
                  ("square", polygon(.5, .5, .32, 4, start=-135, wobble=.01))]
        # then a shape begun but not yet recognised: the first that the model does not know yet is the picture
        partial = [("hexagon", polygon(.5, .5, .34, 6, turns=.34, start=-150, wobble=.01)),
                   ("triangle", polygon(.5, .55, .36, 3, turns=.34, start=150, wobble=.01)),
                   ("octagon", polygon(.5, .5, .32, 8, turns=.4, start=-135, wobble=.01))]
        words = ",".join(word for word, _ in rounds + partial)  # chosen words instead of random ones
        page.goto(f"{url}/?words={words}&pause=400")
        page.wait_for_selector("body[data-ready='1']")
        page.keyboard.press("Enter")  # the game's one click; the rounds then follow by themselves
        for i, (word, stroke) in enumerate(rounds + partial):
            until(f"game.round === {i} && game.phase === 'playing'")
            draw([stroke])
            if i >= len(rounds) and page.evaluate("game.phase") == "playing":
                break
            until("game.phase !== 'playing'")
        page.wait_for_timeout(2500)
        page.screenshot(path=str(args.out))
        print(f"{args.out}: tally {page.inner_text('#tally-score')}, guesses "
              f"{page.eval_on_selector_all('#guesses li', 'els => els.map(e => e.dataset.category)')}")
        browser.close()


if __name__ == "__main__":
    main()
