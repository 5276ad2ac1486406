"""What ``thead ui`` adds to an animate: the same render from the page and from the command line.

Full-size random weights (``LSRConfig()``: the speed does not depend on the values) saved as a
weights folder; an avatar enrolled from the sample's frames; a driver of ``--frames`` frames
(the sample clip looped, with its audio). Each round runs, alternately so that load from other
processes affects both alike:

- CLI: ``thead animate NAME --driver clip.mp4 -o out.mp4 --weights W`` as a new process, wall
  time (so it includes starting Python and importing torch, which a page already did);
- page: in headless Chromium (the system's), click Animate with the same driver (uploaded
  once) and options, until the result's video element has its source, then fetch the mp4.

Both also report the API's own time (``AnimateResult.seconds``: load + render + write), from
the CLI's summary line and the page's status line; the page's overhead is its wall time
against that of the CLI process, and against the API time it wraps.

Usage: python benchmarks/ui_bench.py [--frames 60] [--rounds 3] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from animate_bench import SAMPLE, SHOTS, make_driver  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from thead.config import LSRConfig
    from thead.enroll import EnrollOptions, enroll
    from thead.model import LSR

    tmp = Path(tempfile.mkdtemp(prefix="thead-ui-bench-"))
    env = dict(os.environ, THEAD_HOME=str(tmp / "home"), TMPDIR=str(tmp), GRADIO_TEMP_DIR=str(tmp / "uploads"))
    os.environ["THEAD_HOME"] = env["THEAD_HOME"]
    weights = tmp / "weights"
    LSR(LSRConfig()).save_pretrained(weights)
    enroll(SAMPLE / SHOTS, "bench", EnrollOptions(num_shots=4, landmarks="dlib", device="cpu"), weights=weights)
    driver = make_driver(tmp / "driver.mp4", args.frames)
    print(f"full-size LSR (random weights), {args.frames}-frame driver, fp32, CPU; {args.rounds} rounds, alternating")

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "thead.cli", "ui", "--port", str(port), "--weights", str(weights), "--device", "cpu"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        cli, cli_api, page_wall, page_api = [], [], [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page()
            page.set_default_timeout(1_800_000)
            page.goto(url)
            page.wait_for_selector("#weights-line:has-text('sha256')")
            page.get_by_role("tab", name="Animate").click()
            page.set_input_files("#animate-driver input[type=file]", str(driver))
            page.wait_for_selector(f"#animate-driver :text('{driver.name}')")
            for r in range(args.rounds):
                out = tmp / f"cli{r}.mp4"
                t = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "thead.cli", "animate", "bench", "--driver", str(driver), "-o", str(out),
                                       "--weights", str(weights), "--device", "cpu"], env=env, capture_output=True, text=True, check=True)
                cli.append(time.perf_counter() - t)
                cli_api.append(float(re.search(r" in ([\d.]+) s", done.stderr).group(1)))

                before = page.evaluate("() => { const v = document.querySelector('#animate-result video'); return v ? v.src : ''; }")
                t = time.perf_counter()
                page.click("#animate-go")
                page.wait_for_function(  # every result has a new name, so a new source means this one
                    "before => { const v = document.querySelector('#animate-result video'); return v && v.src && v.src !== before; }", arg=before)
                src = page.get_attribute("#animate-result video", "src")
                body = page.request.get(src).body()
                page_wall.append(time.perf_counter() - t)
                status = page.inner_text("#animate-status")
                page_api.append(float(re.search(r" in ([\d.]+) s", status).group(1)))
                print(f"round {r + 1}: CLI process {cli[-1]:.1f} s (API {cli_api[-1]:.1f} s) | page click-to-video {page_wall[-1]:.1f} s "
                      f"(API {page_api[-1]:.1f} s), {len(body) / 1e6:.2f} MB served", flush=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = [w / c for w, c in zip(page_wall, cli)]
    api_ratios = [w / a for w, a in zip(page_wall, page_api)]
    print(f"median of the rounds' page / CLI process: {statistics.median(ratios):.3f} ({', '.join(f'{r:.3f}' for r in ratios)}); "
          f"page wall / its own API time: {statistics.median(api_ratios):.3f}")


if __name__ == "__main__":
    main()
