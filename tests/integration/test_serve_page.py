"""The prediction page in a real browser: ``braincls serve``'s application on a loopback port
(uvicorn), Debian's headless Chromium driven over the DevTools protocol. The page loads with the
research-use banner and the model, an upload through it shows P(tumour) and the Grad-CAM overlay,
the opacity slider changes the overlay; the screenshot is kept under ``test-output/serve/``."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_models import register_fake_version
from headless_chromium import Chromium, find_chromium

from braincls.data.preprocess import encode_png

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = PROJECT_ROOT / "test-output" / "serve"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _chromium() -> str:
    chromium = find_chromium()
    if chromium is None:
        message = "no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    return chromium


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import uvicorn

    from braincls.serve.app import ServeConfig, create_app

    root = tmp_path_factory.mktemp("page") / "data"
    register_fake_version(root, image_size_px=64, seed=5, threshold=0.5)
    port = free_port()
    config = uvicorn.Config(
        create_app(ServeConfig(data_root=root)), host="127.0.0.1", port=port, log_level="warning"
    )
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uvicorn_server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the service did not start")
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=30)


def _scan(path: Path) -> Path:
    y, x = np.mgrid[:160, :160]
    generator = np.random.default_rng(3)
    head = ((x - 80) ** 2 / 70**2 + (y - 80) ** 2 / 60**2) < 1
    image = head * (110 + 50 * generator.random((160, 160)))
    image[(x - 60) ** 2 + (y - 70) ** 2 < 150] = 245
    path.write_bytes(encode_png(np.clip(image, 0, 255).astype(np.uint8)))
    return path


def test_an_upload_through_the_page_shows_the_probability_and_the_overlay(
    server: str, tmp_path: Path
) -> None:
    chromium = _chromium()
    scan = _scan(tmp_path / "scan.png")
    with Chromium(chromium, tmp_path / "chromium", window=(1200, 1100)) as browser:
        browser.open(server)
        text = browser.wait_for_text(
            ["Research use only", "Version v0001", "threshold 0.500", "roc auc"], timeout_s=60
        )
        assert "Not a medical device" in text
        browser.set_file("#file", scan)
        browser.evaluate("document.getElementById('submit').click()")
        browser.wait_for_text(["scored in"], timeout_s=120, selector="#status")
        shown: Any = browser.evaluate(
            "(() => { const h = document.getElementById('heatmap');"
            " const i = document.getElementById('image');"
            " return {p: document.getElementById('probability').textContent,"
            " call: document.getElementById('call').textContent,"
            " image: i.complete && i.naturalWidth, heatmap: h.complete && h.naturalWidth,"
            " opacity: h.style.opacity, hidden: h.hidden}; })()"
        )
        assert 0.0 <= float(shown["p"]) <= 1.0
        assert "model v0001" in shown["call"]
        assert shown["image"] == 64 and shown["heatmap"] == 64
        assert (shown["opacity"], shown["hidden"]) == ("0.4", False)
        browser.evaluate(
            "(() => { const s = document.getElementById('opacity'); s.value = 75;"
            " s.dispatchEvent(new Event('input')); })()"
        )
        assert browser.evaluate("document.getElementById('heatmap').style.opacity") == "0.75"
        shot = browser.screenshot(SCREENSHOT_DIR / "page-prediction.png")
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
