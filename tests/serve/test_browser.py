"""The page of `engine serve` in real browsers, against a real `engine serve` process:

- Debian's headless Chromium, driven by Selenium through ChromeDriver. It picks a style by
  keyboard, stylizes a photo, and runs the webcam from Chromium's fake camera (a clip of a real
  photo). It switches style while the webcam runs, then stops the server with Ctrl-C.
- Debian's Firefox ESR, driven through its own Marionette protocol (tests/serve/marionette.py;
  no geckodriver). It stylizes a photo and runs the webcam from Firefox's fake camera.

`.ci/run` installs both browsers. Screenshots land in the test's folder, and in
$ENGINE_SCREENSHOTS if it is set."""

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.io import examples

from .running import start_serve

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")


def y4m_clip(path: Path, frames=30, size=(640, 480)) -> Path:
    """A real photo panning slowly, as raw YUV 4:2:0 frames (Chromium's fake camera format)."""
    photo = Image.open(examples.content_photo()).convert("RGB").resize(
        (size[0] + frames * 4, size[1] + 8))
    width, height = size
    with open(path, "wb") as stream:
        stream.write(f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            window = photo.crop((i * 4, 4, i * 4 + width, 4 + height)).convert("YCbCr")
            y, cb, cr = (np.asarray(plane) for plane in window.split())
            stream.write(b"FRAME\n" + y.tobytes())
            for plane in (cb, cr):
                stream.write(plane.reshape(height // 2, 2, width // 2, 2).mean((1, 3))
                             .round().astype(np.uint8).tobytes())
    return path


@pytest.fixture
def server(tmp_path, tiny_vgg_file):
    """`engine serve --port 0` as a process (train jobs on a tiny random VGG); yields
    (address, process)."""
    process, host, port = start_serve(cwd=tmp_path, timeout=120,
                                      env={"ENGINE_VGG_WEIGHTS": str(tiny_vgg_file)})
    address = f"http://{host}:{port}"
    yield address, process
    if process.poll() is None:
        process.kill()


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("the browser test needs Debian's chromium and chromium-driver "
                    "(`apt-get install chromium chromium-driver`; .ci/run installs them)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager downloads nothing
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    clip = y4m_clip(tmp_path / "camera.y4m")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1100",
                 f"--user-data-dir={tmp_path / 'profile'}", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-video-capture={clip}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait(driver, script: str, timeout=120):
    """Until `script` returns something true in the page (Selenium's driver or the Marionette
    client); returns that."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"waited {timeout} s for: {script}")


def shoot(driver, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("ENGINE_SCREENSHOTS"):
        Path(os.environ["ENGINE_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["ENGINE_SCREENSHOTS"]) / path.name)
    return path


def test_the_page_stylizes_a_photo_and_the_webcam(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    address, process = server
    browser.get(address + "/")
    wait(browser, "return document.body.dataset.ready === 'true'")
    loaded = wait(browser, "const imgs = [...document.querySelectorAll('#gallery img')];"
                  "return imgs.length >= 7 && imgs.every(i => i.complete && i.naturalWidth > 0)"
                  " && imgs.length")
    assert loaded >= 7  # the shipped styles' previews, each loaded

    # a style chosen by keyboard: arrows move through the gallery
    chosen = browser.find_element(By.CSS_SELECTOR, '#gallery [aria-checked="true"]')
    first = chosen.get_attribute("data-style")
    chosen.send_keys(Keys.ARROW_RIGHT)
    now = browser.find_element(By.CSS_SELECTOR, '#gallery [aria-checked="true"]')
    assert now.get_attribute("data-style") != first
    assert browser.switch_to.active_element == now
    browser.find_element(By.CSS_SELECTOR, '#gallery [data-style="wave"]').click()

    # a photo picked: the stylized result, with before/after and a download link
    photo = tmp_path / "cat.jpg"
    Image.open(examples.content_photo()).convert("RGB").resize((480, 320)).save(photo)
    picker = browser.find_element(By.ID, "photos")
    browser.execute_script("arguments[0].hidden = false", picker)
    picker.send_keys(str(photo))
    browser.execute_script("arguments[0].hidden = true", picker)
    size = wait(browser, "const a = document.querySelector('.result .after');"
                "return a && a.complete && a.naturalWidth > 0 && [a.naturalWidth, "
                "a.naturalHeight]")
    assert size == [480, 320]
    assert browser.find_element(By.CSS_SELECTOR, ".result .download").get_attribute(
        "download") == "cat-wave.png"
    shoot(browser, tmp_path, "page-photo")

    # the webcam: frames go out over the WebSocket and come back stylized
    browser.find_element(By.ID, "tab-webcam").click()
    browser.find_element(By.ID, "webcam-start").click()
    wait(browser, "return Number(document.body.dataset.webcamFrames || 0) >= 5", 180)
    out = wait(browser, "const o = document.getElementById('webcam-out');"
               "return o.complete && o.naturalWidth > 0 && [o.naturalWidth, o.naturalHeight]")
    assert out == [640, 480]
    browser.find_element(By.CSS_SELECTOR, '#gallery [data-style="scream"]').click()
    seen = int(browser.execute_script("return document.body.dataset.webcamFrames"))
    wait(browser, f"return Number(document.body.dataset.webcamFrames) >= {seen + 5}", 180)
    fps = browser.find_element(By.ID, "webcam-fps").text
    assert re.fullmatch(r"\d+\.\d frames/s", fps) and float(fps.split()[0]) > 0
    assert browser.find_element(By.ID, "webcam-status").text == ""  # no error came back
    shoot(browser, tmp_path, "page-webcam")
    browser.find_element(By.ID, "webcam-stop").click()

    # a video: uploaded, followed, played back stylized with its audio
    from ..io.test_video import make_clip

    clip = make_clip(tmp_path / "clip.mp4", frames=12, size=(96, 64), audio=True)
    browser.find_element(By.ID, "tab-video").click()
    browser.find_element(By.ID, "video-file").send_keys(str(clip))
    browser.find_element(By.CSS_SELECTOR, "#video-form button[type=submit]").click()
    wait(browser, "return document.getElementById('video-status').textContent"
         ".startsWith('done')", 180)
    assert "12 frames, audio kept" in browser.find_element(By.ID, "video-status").text
    assert browser.execute_script("return document.querySelector('#video-result video')"
                                  ".getAttribute('src')").startswith("/v1/jobs/")

    # a style trained from the page: progress, then the new style in the gallery
    painting = tmp_path / "painting.png"
    Image.open(examples.content_photo()).convert("RGB").resize((128, 96)).save(painting)
    browser.find_element(By.ID, "tab-train").click()
    browser.find_element(By.ID, "train-painting").send_keys(str(painting))
    browser.find_element(By.ID, "train-name").send_keys("from_page")
    browser.find_element(By.ID, "train-minutes").send_keys("0.2")
    browser.find_element(By.CSS_SELECTOR, "#train-form button[type=submit]").click()
    wait(browser, "return document.getElementById('train-status').textContent"
         ".startsWith('done')", 300)
    wait(browser, "return document.querySelector('#gallery [data-style=\"from_page\"]')"
         "?.getAttribute('aria-checked') === 'true'")
    wait(browser, "const p = document.getElementById('train-preview');"
         "return !p.hidden && p.complete && p.naturalWidth > 0")
    shoot(browser, tmp_path, "page-train")

    # Ctrl-C stops the server cleanly
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=30)
    said = process.stderr.read()
    assert code == 0, said
    assert "stopped" in said and "Traceback" not in said


@pytest.fixture
def firefox(tmp_path):
    """Firefox ESR, headless, with its fake camera; yields a Marionette client."""
    import socket

    from .marionette import Marionette

    if not FIREFOX:
        pytest.fail("the Firefox test needs Debian's firefox-esr (`apt-get install firefox-esr`; "
                    ".ci/run installs it)")
    with socket.socket() as probe:  # a free port for Marionette
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    profile = tmp_path / "firefox"
    profile.mkdir()
    (profile / "user.js").write_text("\n".join(
        f'user_pref("{key}", {value});' for key, value in {
            "marionette.port": port, "media.navigator.streams.fake": "true",
            "media.navigator.permission.disabled": "true",
            "browser.shell.checkDefaultBrowser": "false",
            "datareporting.policy.dataSubmissionEnabled": "false",
            "app.update.disabledForTesting": "true", "network.captive-portal-service.enabled":
            "false"}.items()) + "\n")
    process = subprocess.Popen([FIREFOX, "--headless", "--marionette", "--no-remote",
                                "--profile", str(profile)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        client = Marionette(port)
        client("WebDriver:NewSession", capabilities={})
        yield client
        client("WebDriver:DeleteSession")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_page_works_in_firefox(server, firefox, tmp_path):
    import base64

    address, _ = server
    firefox("WebDriver:Navigate", url=address + "/")
    wait(firefox, "return document.body.dataset.ready === 'true'")
    assert wait(firefox, "const imgs = [...document.querySelectorAll('#gallery img')];"
                        "return imgs.length >= 7 && imgs.every(i => i.complete && "
                        "i.naturalWidth > 0) && imgs.length") >= 7
    chosen = "return document.querySelector('#gallery [aria-checked=\"true\"]').dataset.style"
    assert firefox.execute_script(chosen) == "starry_night"  # the default, by its alias
    photo = tmp_path / "cat.jpg"
    Image.open(examples.content_photo()).convert("RGB").resize((480, 320)).save(photo)
    firefox("WebDriver:ElementSendKeys", id=firefox.element("#photos"), text=str(photo))
    size = wait(firefox, "const a = document.querySelector('.result .after');"
                        "return a && a.complete && a.naturalWidth > 0 && [a.naturalWidth, "
                        "a.naturalHeight]")
    assert size == [480, 320]
    firefox.execute_script("document.getElementById('tab-webcam').click();"
                           "document.getElementById('webcam-start').click();")
    wait(firefox, "return Number(document.body.dataset.webcamFrames || 0) >= 5", 180)
    status = "return document.getElementById('webcam-status').textContent"
    assert firefox.execute_script(status) == ""  # no error came back
    shot = tmp_path / "firefox-webcam.png"
    shot.write_bytes(base64.b64decode(firefox("WebDriver:TakeScreenshot", full=False)["value"]))
    if os.environ.get("ENGINE_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["ENGINE_SCREENSHOTS"]) / shot.name)
