"""``thead ui`` in a real browser: headless Chromium (Debian's package) driven by Playwright.

A ``thead ui`` process serves the page on a free local port with the authors' reduced parity
weights (converted) and a fresh avatar store; the tests then use the page as a person would:
enroll a sample photo, find it in the gallery, animate it with a sample clip and fetch the
served mp4, cancel a render, fine-tune, see a bad upload's one-sentence error, delete the
avatar. The tests in this module run in order and share the server and the browser.

``THEAD_UI_SCREENSHOTS=docs/ui`` also saves a screenshot of each tab there (README's UI section).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_animate import CLIP_17, TRAIN_17, probe, trim_clip

pytest.importorskip("gradio", reason="the ui extra is not installed (pip install -e '.[ui]')")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no system Chromium (apt-get install -y chromium); .ci/run installs it", allow_module_level=True)

DRIVER_FRAMES = 12
TIMEOUT_MS = 240_000  # renders on 2 shared cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def files(sample_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("uploads")
    not_a_photo = d / "holiday.jpg"
    not_a_photo.write_text("this is a text file with a photo's name\n")
    return {
        "photo": sample_dir / TRAIN_17 / "00000_rgb.png",
        "clip": trim_clip(sample_dir / CLIP_17, d / "driver.mp4", DRIVER_FRAMES),
        "long_clip": _looped(sample_dir / CLIP_17, d / "long.mp4", 5),
        "not_a_photo": not_a_photo,
        "too_big": _junk(d / "too-big.mp4", 2 << 20),  # over the server's --max-upload-mb 1
    }


def _looped(src: Path, dst: Path, times: int) -> Path:
    """``src`` played ``times`` times in a row (stream copy, audio included): a render that is
    still running while the queue test sets up another page, however fast rendering gets."""
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-stream_loop", str(times - 1), "-i", str(src),
                    "-c", "copy", str(dst)], check=True, timeout=60)
    assert dst.stat().st_size < 1 << 20  # under the server's --max-upload-mb 1
    return dst


def _junk(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


@pytest.fixture(scope="module")
def server(parity_weights, tmp_path_factory):
    """``thead ui`` on a free port; tiny random VGG loss networks in its cache (fine-tuning)."""
    from safetensors.torch import save_file

    from tests.train.helpers import tiny_loss_networks

    root = tmp_path_factory.mktemp("ui")
    (root / "cache" / "backbones").mkdir(parents=True)
    nets = tiny_loss_networks()
    save_file(nets.vgg19.state_dict(), str(root / "cache" / "backbones" / "vgg19_keras_imagenet_notop.safetensors"))
    save_file(nets.vgg_face.state_dict(), str(root / "cache" / "backbones" / "vgg_face_keras.safetensors"))
    (root / "tmp").mkdir()
    env = dict(os.environ, THEAD_HOME=str(root / "home"), THEAD_CACHE=str(root / "cache"), TMPDIR=str(root / "tmp"),
               GRADIO_TEMP_DIR=str(root / "uploads"), OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    port = _free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "thead.cli", "ui", "--port", str(port), "--weights", str(parity_weights),
                             "--device", "cpu", "--max-upload-mb", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"thead ui did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield {"url": url, "home": root / "home", "tmp": root / "tmp", "log": root / "server.log"}
    proc.terminate()
    proc.wait(timeout=30)
    log.close()
    assert not list((root / "tmp").glob("thead-ui-*")), "the server left its results folder behind"


@pytest.fixture(scope="module")
def page(server):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1280, "height": 1000})
        tab.set_default_timeout(TIMEOUT_MS)
        tab.goto(server["url"])
        tab.wait_for_selector("#weights-line:has-text('sha256')")
        yield tab
        browser.close()


def screenshot(page, name: str) -> None:
    """The whole page as a small PNG (256 colours) in $THEAD_UI_SCREENSHOTS, when set."""
    folder = os.environ.get("THEAD_UI_SCREENSHOTS")
    if folder:
        from PIL import Image

        Path(folder).mkdir(parents=True, exist_ok=True)
        path = Path(folder) / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        with Image.open(path) as im:
            small = im.convert("RGB").quantize(256)
        small.save(path, optimize=True)


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def upload(page, elem_id: str, path: Path) -> None:
    page.set_input_files(f"#{elem_id} input[type=file]", str(path))
    page.wait_for_selector(f"#{elem_id} :text('{path.stem}')")  # the name shows as stem + suffix


def no_traceback(page) -> None:
    assert "Traceback" not in page.inner_text("body")


def test_the_page_names_its_weights(page, parity_weights):
    line = page.inner_text("#weights-line")
    assert str(parity_weights) in line and "--weights" in line and "local folder" in line


def test_enroll_a_photo_and_see_it_in_the_gallery(page, server, files):
    tab(page, "Enroll")
    upload(page, "enroll-files", files["photo"])
    page.locator("#enroll-name textarea, #enroll-name input").first.fill("ada")
    page.click("#enroll-find")
    page.wait_for_selector("#enroll-status :text('Found 1 shot(s)')")
    assert page.locator("#enroll-shots img").count() >= 1  # the crop beside its contour drawing
    assert "one photo gives one shot" in page.inner_text("#enroll-status")  # K = 8 asked: a warning
    assert not (server["home"] / "avatars" / "ada.safetensors").exists()  # nothing saved before Save
    screenshot(page, "enroll")
    page.click("#enroll-save")
    page.wait_for_selector("#enroll-status :text('Saved')")
    assert (server["home"] / "avatars" / "ada.safetensors").is_file()

    tab(page, "Avatars")
    page.wait_for_selector("#avatar-gallery :text('ada')")
    assert page.locator("#avatar-gallery img").count() == 1
    page.wait_for_selector("#avatar-details :text('shots (K)')")
    assert "fine-tuned" in page.inner_text("#avatar-details")
    screenshot(page, "avatars")


def test_a_non_image_upload_is_one_sentence(page, files):
    tab(page, "Enroll")
    page.locator("#enroll-files button[aria-label='Clear']").first.click()
    upload(page, "enroll-files", files["not_a_photo"])
    page.locator("#enroll-name textarea, #enroll-name input").first.fill("bob")
    page.click("#enroll-find")
    error = page.wait_for_selector("#enroll-status .thead-error")
    text = error.inner_text()
    assert text == "Error: holiday.jpg is not an image (unrecognised format)."  # load_image's own words
    no_traceback(page)


def test_animate_with_a_clip_serves_an_mp4_with_its_frames_and_audio(page, server, files, tmp_path):
    tab(page, "Animate")
    playwright.expect(page.locator("#animate-pick input")).to_have_value("ada", timeout=30_000)  # the saved one, picked
    upload(page, "animate-driver", files["clip"])
    page.click("#animate-go")
    page.wait_for_selector("#animate-status .thead-ok:has-text('Done')")
    video = page.wait_for_selector("#animate-result video")
    src = video.get_attribute("src")
    assert src, "the result video has no source"
    screenshot(page, "animate")
    served = tmp_path / "served.mp4"
    served.write_bytes(page.request.get(src).body())
    num_frames, fps, size, audio = probe(served)
    driver = probe(files["clip"])
    assert num_frames == driver[0] == DRIVER_FRAMES and fps == driver[1] and size == (224, 224)
    assert audio and driver[3]  # the sample clips carry AAC audio: kept
    assert f"{DRIVER_FRAMES} frame(s)" in page.inner_text("#animate-status") and "with audio" in page.inner_text("#animate-status")


def test_animate_start_and_duration_take_part_of_the_driver(page, server, files, tmp_path):
    tab(page, "Animate")  # the clip from the test before is still the driver
    before = page.wait_for_selector("#animate-result video").get_attribute("src")  # the last result, still shown
    try:
        page.fill("#animate-start input", "0.2")
        page.fill("#animate-duration input", "0.2")
        page.press("#animate-duration input", "Tab")  # committed, as a person leaving the field
        page.click("#animate-go")
        page.wait_for_function(  # a new result, not the one from the test before
            "before => { const v = document.querySelector('#animate-result video'); return v && v.src && v.src !== before; }",
            arg=page.evaluate("() => document.querySelector('#animate-result video').src"), timeout=TIMEOUT_MS)
        page.wait_for_selector("#animate-status .thead-ok:has-text('Done')")
        src = page.wait_for_selector("#animate-result video").get_attribute("src")
        assert src != before
        served = tmp_path / "part.mp4"
        served.write_bytes(page.request.get(src).body())
        num_frames, fps, _, audio = probe(served)
        assert round(0.2 * fps) - 1 <= num_frames <= round(0.2 * fps) + 1 and audio  # 0.2 s of a 12-frame clip
        assert f"{num_frames} frame(s)" in page.inner_text("#animate-status")
    finally:
        page.fill("#animate-start input", "0")  # the next tests use the whole driver
        page.fill("#animate-duration input", "0")
        page.press("#animate-duration input", "Tab")


def test_one_render_at_a_time_others_queue_and_cancel_leaves_nothing(page, server, files):
    tab(page, "Animate")
    page.locator("#animate-driver button[aria-label='Clear']").first.click()
    upload(page, "animate-driver", files["long_clip"])
    before = {p for p in server["tmp"].rglob("*") if p.is_file()}
    page.click("#animate-go")
    page.wait_for_selector("#animate-result :text('frames')")  # the progress: "n/820 frames · ... left"
    assert "left" in page.inner_text("#animate-result")

    # Someone else's page meanwhile: its render waits, with its place in the queue shown.
    other = page.context.browser.new_page()  # another person: a session of its own
    other.set_default_timeout(TIMEOUT_MS)
    other.goto(server["url"])
    tab(other, "Animate")
    playwright.expect(other.locator("#animate-pick input")).to_have_value("ada", timeout=30_000)
    upload(other, "animate-driver", files["clip"])
    other.click("#animate-go")
    other.wait_for_selector("#animate-result :text('queue')")
    assert "Done" not in other.inner_text("#animate-status")

    # Cancel the first: it stops at its next frame; the waiting one then runs.
    page.click("#animate-cancel")
    page.wait_for_selector("#animate-status :text('Cancelling')")
    other.wait_for_selector("#animate-status .thead-ok:has-text('Done')")
    served = Path(other.get_attribute("#animate-result video", "src").rsplit("/", 1)[-1])
    new = {p for p in server["tmp"].rglob("*") if p.is_file()} - before
    assert [p.name for p in new] == [served.name], f"left behind: {sorted(map(str, new))}"  # the cancelled render left nothing
    other.close()


def test_finetune_from_the_page(page, server):
    tab(page, "Fine-tune")
    page.wait_for_selector("#finetune-estimate :text('steps on the avatar')")
    page.locator("#finetune-steps input").fill("2")
    page.locator("#finetune-steps input").press("Enter")
    page.wait_for_selector("#finetune-estimate :text('2 steps')")
    screenshot(page, "finetune")
    page.click("#finetune-go")
    page.wait_for_selector("#finetune-status .thead-ok:has-text('Fine-tuned')")
    assert (server["home"] / "avatars" / "ada.finetuned.safetensors").is_file()


def test_delete_asks_then_deletes(page, server):
    tab(page, "Avatars")
    page.click("#avatar-delete")
    page.click("#avatar-delete-no")  # changed their mind
    assert (server["home"] / "avatars" / "ada.safetensors").is_file()
    page.click("#avatar-delete")
    page.click("#avatar-delete-yes")
    page.wait_for_selector("#avatar-status :text(\"Deleted 'ada'\")")
    assert not (server["home"] / "avatars" / "ada.safetensors").exists()
    assert not (server["home"] / "avatars" / "ada.finetuned.safetensors").exists()
    assert page.locator("#avatar-gallery img").count() == 0
    no_traceback(page)


def test_uploads_are_size_limited(page, files):
    tab(page, "Animate")
    page.locator("#animate-driver button[aria-label='Clear']").first.click()
    page.set_input_files("#animate-driver input[type=file]", str(files["too_big"]))
    page.wait_for_selector(":text-matches('exceed|too large|maximum', 'i')")
    body = page.inner_text("body")
    assert "too-big" not in page.inner_text("#animate-driver")  # refused, not uploaded
    no_traceback(page)
    assert any(w in body.lower() for w in ("exceed", "too large", "maximum")), body[-500:]
