"""Open a long recording in the real studio, in headless Chromium: seconds from the upload to the overview and the
first viewport on screen, with a screenshot of the encode's progress bar on the way.

    python benchmarks/studio_open.py /usr/share/lmms/samples --minutes 10 --model assets/demo.distill

The recording is the folder's beats and bass loops concatenated to the given length (real audio), written as a
44.1 kHz WAV. The clock starts when the file is handed to the upload box (the browser then uploads it, the server
reads, encodes with the default search and decodes the viewport) and stops when the status line says it opened
and the overview's box and the heatmap cells are visible. Needs chromium (apt) and playwright (pip).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode import recording  # noqa: E402

from distill import keep_freed_memory  # noqa: E402
from distill_studio import build_app  # noqa: E402
from distill_studio.app import launch_kwargs  # noqa: E402
from distill_studio.state import Limits  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", nargs="?", default="/usr/share/lmms/samples")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--folders", default="beats,bassloops")
    ap.add_argument("--model", default="assets/demo.distill")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--screenshots", default="/tmp/studio_open")
    args = ap.parse_args(argv)
    from playwright.sync_api import expect, sync_playwright

    shots = Path(args.screenshots)
    shots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / f"take-{args.minutes:g}min.wav"
        sf.write(wav, recording(Path(args.root), args.folders.split(","), args.minutes * 60), 44100)
        keep_freed_memory()  # as `python app.py` (distill_studio.app.main) does
        demo = build_app(Limits(demo_model=args.model))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_kwargs(Limits()))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, headless=True,
                                            args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1500, "height": 1400})
                page.goto(f"http://127.0.0.1:{port}/")
                expect(page.locator("#hm-A-1 .hm-c").first).to_be_visible(timeout=120000)
                t0 = time.perf_counter()
                page.locator("#upload-a input[type=file]").set_input_files(str(wav))
                expect(page.locator("#status")).to_contain_text("Encoding", timeout=120000)
                seen_bar = time.perf_counter() - t0
                page.wait_for_timeout(1500)
                page.screenshot(path=str(shots / "encoding.png"))
                expect(page.locator("#status")).to_contain_text(f"Opened {wav.name}", timeout=600000)
                expect(page.locator("#overview-A .ov-box")).to_be_visible()
                expect(page.locator("#hm-A-0 .hm-c").first).to_be_visible()
                opened = time.perf_counter() - t0
                cells = page.locator("#hm-A-0 .hm-c").count()
                expect(page.locator("#audio-original")).to_contain_text("0:30", timeout=60000)  # the viewport's audio
                playable = time.perf_counter() - t0
                page.screenshot(path=str(shots / "opened.png"), full_page=True)
                browser.close()
        finally:
            demo.close()
    print(f"{args.minutes:g}-minute recording: progress bar after {seen_bar:.1f} s; overview + first viewport "
          f"visible {opened:.1f} s after the upload started, its audio in the players at {playable:.1f} s; "
          f"{cells} heatmap cells per level; screenshots in {shots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
