"""The studio in headless Chromium: upload a folder, train briefly, drag-select on Timbre, swap with B, undo, redo, play."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import running_studio

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (.ci/run installs Debian's chromium)"),
]


@pytest.fixture(scope="module")
def url(trained, corpus_dir):
    with running_studio(trained[1], corpus_dir, max_train_minutes=0.05) as address:
        yield address


def _box(page, selector: str) -> tuple[float, float]:
    b = page.locator(selector).bounding_box()
    return b["x"] + b["width"] / 2, b["y"] + b["height"] / 2


def _drag(page, heatmap: str, start: tuple[int, int], end: tuple[int, int]) -> None:
    """Drag on a heatmap from cell (row, column) `start` to `end`, as a person selects a rectangle."""
    x0, y0 = _box(page, f'{heatmap} .hm-c[data-r="{start[0]}"][data-c="{start[1]}"]')
    x1, y1 = _box(page, f'{heatmap} .hm-c[data-r="{end[0]}"][data-c="{end[1]}"]')
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=6)
    page.mouse.up()


def _play(page, player: str) -> None:
    """Press Play on a player and see it playing. On a loaded machine the browser may still be decoding the
    audio when Play is pressed (the press is then ignored), so a person's second press is allowed."""
    from playwright.sync_api import expect

    for attempt in range(3):
        page.locator(f"{player} button[aria-label='Play']").click()
        try:
            expect(page.locator(f"{player} button[aria-label='Pause']")).to_be_visible(timeout=15000)
            return
        except AssertionError:
            if attempt == 2:
                raise


def test_upload_train_select_swap_undo_redo_play(url, corpus_dir, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    folder = tmp_path / "upload"
    folder.mkdir()
    for p in sorted(corpus_dir.iterdir()):
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "notes.txt").write_text("not audio")
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--no-first-run",
                                          "--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport={"width": 1500, "height": 1300})
        try:
            t0 = time.perf_counter()
            page.goto(url)
            expect(page.locator("#hm-A-1 .hm-c").first).to_be_visible(timeout=60000)
            load_s = time.perf_counter() - t0

            # Data & Train: folder upload -> report -> train briefly
            page.get_by_role("tab", name="Data & Train").click()
            page.locator("#folder-upload input[type=file]").set_input_files(str(folder))
            expect(page.locator("#dataset-summary")).to_contain_text("6 of 7 files accepted", timeout=60000)
            expect(page.locator("#dataset-table")).to_contain_text("notes.txt")
            page.click("#train-btn")
            expect(page.locator("#train-status")).to_contain_text("Model ready", timeout=180000)
            expect(page.locator("#model-summary")).to_contain_text("trained here", timeout=60000)
            # the Edit tab's status describes the model and the clips open now, not the demo's
            expect(page.locator("#status")).to_contain_text("Now using", timeout=60000)
            expect(page.locator("#status")).not_to_contain_text("Demo clips open")

            # Edit & Listen: drag a rectangle on A's Timbre heatmap, swap with B
            page.get_by_role("tab", name="Edit & Listen").click()
            expect(page.locator('#hm-A-1 .hm-c[data-r="6"][data-c="0"]')).to_be_visible(timeout=60000)
            _drag(page, "#hm-A-1", (6, 0), (1, 1))
            expect(page.locator("#selection")).to_contain_text("Timbre", timeout=30000)
            expect(page.locator("#selection")).to_contain_text("bands 1–6")
            before = page.locator('#hm-A-1 .hm-c[data-r="3"][data-c="0"]').get_attribute("data-k")
            b_code = page.locator('#hm-B-1 .hm-c[data-r="3"][data-c="0"]').get_attribute("data-k")
            page.click("#swap-btn")
            expect(page.locator("#history")).to_contain_text("swap", timeout=30000)
            expect(page.locator("#status")).to_contain_text("Decoded in")
            expect(page.locator('#hm-A-1 .hm-c[data-r="3"][data-c="0"]')).to_have_attribute("data-k", b_code)

            # keyboard undo / redo
            page.mouse.click(5, 5)
            page.keyboard.press("Control+z")
            expect(page.locator("#history")).to_contain_text("undone", timeout=30000)
            expect(page.locator('#hm-A-1 .hm-c[data-r="3"][data-c="0"]')).to_have_attribute("data-k", before)
            page.keyboard.press("Control+Shift+z")
            expect(page.locator("#history")).not_to_contain_text("undone", timeout=30000)
            expect(page.locator('#hm-A-1 .hm-c[data-r="3"][data-c="0"]')).to_have_attribute("data-k", b_code)

            # play the edited audio
            _play(page, "#audio-edited")
            page.screenshot(path=str(ARTIFACTS / "studio-e2e.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "studio-e2e-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert load_s < 60


@pytest.fixture
def bad_folder(tmp_path):
    """A small folder of bad inputs (the kinds tests/test_bad_inputs.py covers) and four good 1-2 s clips, two of
    them both named kick.wav in different subfolders. Returns (folder, {file: reason words}, [good files])."""
    import numpy as np
    import soundfile as sf
    from conftest import SR, tone

    root = tmp_path / "my sounds"
    (root / "drums").mkdir(parents=True)
    (root / "fx").mkdir()
    rng = np.random.default_rng(13)
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x10\x00\x00WAVE" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (root / "empty.wav").write_bytes(b"")
    (root / "notes.wav").write_text("These are my session notes, not audio.\nTake 2 was the best.\n" * 20)
    sf.write(root / "silence.wav", np.zeros(SR, np.float32), SR)
    sf.write(root / "pluck.wav", tone(1.0, 220, sr=44100), 44100)
    sf.write(root / "pad.flac", tone(2.0, 330, decay=0.2), SR)
    sf.write(root / "drums" / "kick.wav", tone(1.0, 55, decay=4.0), SR)
    sf.write(root / "fx" / "kick.wav", tone(1.5, 880, noise=0.2), SR)
    rejected = {"corrupt.wav": "corrupt", "empty.wav": "empty file (0 bytes)", "notes.wav": "holds text",
                "silence.wav": "silent"}
    return root, rejected, ["pluck.wav", "pad.flac", "kick.wav", "kick (2).wav"]


def test_folder_upload_of_bad_inputs_names_each_with_its_reason(url, bad_folder):
    """Through the real page: every bad file is a 'rejected' row with its reason, every good one 'accepted', and
    two files both named kick.wav stay two rows."""
    from playwright.sync_api import expect, sync_playwright

    folder, rejected, accepted = bad_folder
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1500, "height": 1300})
        try:
            page.goto(url)
            page.get_by_role("tab", name="Data & Train").click()
            page.locator("#folder-upload input[type=file]").set_input_files(str(folder))
            expect(page.locator("#dataset-summary")).to_contain_text("4 of 8 files accepted", timeout=60000)
            rows = page.locator("#dataset-table div[role=row]")   # the grid's rows (virtualised; all 8 are drawn)
            for name, why in rejected.items():
                row = rows.filter(has=page.get_by_role("gridcell", name=name, exact=True))
                expect(row).to_have_count(1)
                expect(row).to_contain_text("rejected")
                expect(row).to_contain_text(why)
            for name in accepted:
                row = rows.filter(has=page.get_by_role("gridcell", name=name, exact=True))
                expect(row).to_have_count(1)
                expect(row).to_contain_text("accepted")
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "studio-e2e-bad-inputs-failure.png"), full_page=True)
            raise
        finally:
            browser.close()


@pytest.fixture(scope="module")
def prior_url(prior_codec, corpus_dir):
    with running_studio(prior_codec[1], corpus_dir, max_train_minutes=0.05) as address:
        yield address


def test_select_regenerate_audition_two_versions_keep_one_undo(prior_url):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport={"width": 1500, "height": 1600})
        try:
            page.goto(prior_url)
            expect(page.locator('#hm-A-1 .hm-c[data-r="0"][data-c="0"]')).to_be_visible(timeout=60000)
            _drag(page, "#hm-A-1", (7, 0), (0, 2))
            expect(page.locator("#selection")).to_contain_text("Timbre", timeout=30000)
            page.locator("#rg-count input").fill("2")
            page.click("#regen-btn")
            expect(page.locator("#status")).to_contain_text("Drew 2 versions", timeout=60000)
            expect(page.locator("#rg-audio-0")).to_be_visible()
            expect(page.locator("#rg-audio-1")).to_be_visible()
            expect(page.locator("#rg-audio-2")).to_be_hidden()
            for i in (0, 1):   # audition both
                _play(page, f"#rg-audio-{i}")
            before = page.locator('#hm-A-1 .hm-c[data-r="3"][data-c="1"]').get_attribute("data-k")
            page.click("#rg-keep-1")
            expect(page.locator("#history")).to_contain_text("regenerate", timeout=30000)
            expect(page.locator("#status")).to_contain_text("Decoded in")
            page.screenshot(path=str(ARTIFACTS / "studio-regenerate.png"), full_page=True)
            page.mouse.click(5, 5)
            page.keyboard.press("Control+z")
            expect(page.locator("#history")).to_contain_text("undone", timeout=30000)
            expect(page.locator('#hm-A-1 .hm-c[data-r="3"][data-c="1"]')).to_have_attribute("data-k", before)
            for name in ("Structure", "Detail"):   # every level: each version is a passage of the training files
                page.locator("#levels").get_by_label(name).check()
            expect(page.locator("#selection")).to_contain_text("Structure+Timbre+Detail", timeout=30000)
            page.click("#regen-btn")
            expect(page.locator("#rg-audio-0 label").first).to_contain_text("Version 1 — from ", timeout=60000)
            expect(page.locator("#rg-audio-1 label").first).to_contain_text("Version 2 — from ")
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "studio-regenerate-failure.png"), full_page=True)
            raise
        finally:
            browser.close()


@pytest.fixture
def three_minute_wav(tmp_path):
    """A 3-minute synthetic take: notes changing every 2 s."""
    import numpy as np
    import soundfile as sf
    from conftest import tone

    rng = np.random.default_rng(1)
    notes = [tone(2.0, float(f), noise=0.02, decay=0.8, seed=i, sr=44100)
             for i, f in enumerate(rng.choice([110, 220, 330, 440], size=90))]
    path = tmp_path / "take.wav"
    sf.write(path, np.concatenate(notes).astype(np.float32), 44100)
    return path


def test_long_clip_open_scroll_select_edit_play(url, three_minute_wav):
    """A 3-minute clip: the page holds only the viewport's cells; dragging the overview box moves the
    viewport; an edit there is decoded and playable at once."""
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport={"width": 1500, "height": 1600})
        try:
            page.goto(url)
            expect(page.locator("#hm-A-1 .hm-c").first).to_be_visible(timeout=60000)
            page.locator("#upload-a input[type=file]").set_input_files(str(three_minute_wav))
            t_open = time.perf_counter()
            expect(page.locator("#status")).to_contain_text("Encoding take.wav", timeout=60000)  # the bar
            expect(page.locator("#status")).to_contain_text("Opened take.wav", timeout=180000)
            open_s = time.perf_counter() - t_open
            expect(page.locator("#overview-A .ov-box")).to_be_visible()
            expect(page.locator("#overview-A")).to_contain_text("of 3:00.0")
            heat = page.locator("#hm-A-0 .hm")
            cols, rows = int(heat.get_attribute("data-cols")), int(heat.get_attribute("data-rows"))
            assert page.locator("#hm-A-0 .hm-c").count() == cols * rows and cols < 200   # the viewport, not 3 minutes

            # drag the viewport box to the middle of the strip
            strip = page.locator("#overview-A .ov-strip").bounding_box()
            bx, by = _box(page, "#overview-A .ov-box")
            page.mouse.move(bx, by)
            page.mouse.down()
            page.mouse.move(strip["x"] + strip["width"] * 0.6, by, steps=8)
            t0 = time.perf_counter()
            page.mouse.up()
            expect(page.locator("#status")).to_contain_text("Moved", timeout=30000)
            redraw_s = time.perf_counter() - t0
            c0 = int(page.locator("#hm-A-0 .hm").get_attribute("data-c0"))
            assert c0 > cols, c0
            assert page.locator("#hm-A-0 .hm-c").count() == cols * rows

            # select there, edit, hear it
            _drag(page, "#hm-A-1", (rows - 1, c0 + 5), (0, c0 + 9))
            expect(page.locator("#selection")).to_contain_text("Timbre", timeout=30000)
            page.locator("#code-in input").fill("5")
            page.click("#set-btn")
            expect(page.locator("#history")).to_contain_text("set", timeout=30000)
            expect(page.locator("#status")).to_contain_text("Decoded in")
            expect(page.locator(f'#hm-A-1 .hm-c[data-r="0"][data-c="{c0 + 7}"]')).to_have_attribute("data-k", "5")
            _play(page, "#audio-edited")
            page.click("#view-later")
            expect(page.locator("#status")).to_contain_text("Later", timeout=30000)
            page.screenshot(path=str(ARTIFACTS / "studio-long-clip.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "studio-long-clip-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    print(f"opened in {open_s:.2f} s; overview drag -> heatmaps redrawn in {redraw_s:.2f} s; {cols * rows} cells per level")
