"""Drive the system's headless Chromium over the DevTools protocol (no browser download).

Just enough of the protocol for page checks (the dashboard in the operations test, the
prediction page of ``braincls serve``): open a page, wait until its rendered text contains what
we look for, choose a file for a file input, run a script, take a full-page screenshot. The
websocket client is the ``websockets`` package Prefect already depends on. ``tests/`` is on
``sys.path`` through its conftest.py, so every test folder imports it as ``headless_chromium``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.sync.client import ClientConnection, connect

#: Executables tried in order (Debian's package installs ``chromium``).
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """``$BRAINCLS_CHROMIUM`` or the first Chromium on PATH, else None."""
    override = os.environ.get("BRAINCLS_CHROMIUM")
    if override:
        return override
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """One headless Chromium process with one page, as a context manager."""

    def __init__(self, executable: str, workdir: Path, window: tuple[int, int] = (1440, 1000)):
        self.executable = executable
        self.workdir = workdir
        self.window = window
        self.process: subprocess.Popen[bytes] | None = None
        self.socket: ClientConnection | None = None
        self._next_id = 0

    def __enter__(self) -> Chromium:
        profile = self.workdir / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "chromium.log").open("wb")
        self.process = subprocess.Popen(
            [
                self.executable,
                "--headless=new",
                # Root (as in CI containers) cannot use Chromium's sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                f"--window-size={self.window[0]},{self.window[1]}",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--force-color-profile=srgb",
                "about:blank",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            port = self._wait_for_port(profile / "DevToolsActivePort", timeout_s=60)
            self.socket = connect(self._page_socket_url(port), max_size=None, open_timeout=30)
            self.call("Page.enable")
            self.call("Runtime.enable")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def _wait_for_port(self, port_file: Path, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                log = (self.workdir / "chromium.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"chromium exited with {self.process.returncode}: {log}")
            if port_file.exists():
                text = port_file.read_text().split()
                if text:
                    return int(text[0])
            time.sleep(0.2)
        raise TimeoutError(f"chromium did not open its DevTools port within {timeout_s} s")

    @staticmethod
    def _page_socket_url(port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        pages = [target for target in targets if target.get("type") == "page"]
        if not pages:
            raise RuntimeError(f"chromium has no page target: {targets}")
        return str(pages[0]["webSocketDebuggerUrl"])

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are skipped)."""
        assert self.socket is not None
        self._next_id += 1
        message_id = self._next_id
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params or {}}))
        while True:
            reply = json.loads(self.socket.recv(timeout=60))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))

    def open(self, url: str) -> None:
        """Navigate the page to ``url``."""
        self.call("Page.navigate", {"url": url})

    def text(self, selector: str = "body") -> str:
        """The rendered text of the first element matching ``selector`` ('' while there is none)."""
        script = (
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " return e ? e.innerText : ''; })()"
        )
        result = self.call("Runtime.evaluate", {"expression": script, "returnByValue": True})
        return str(result.get("result", {}).get("value", ""))

    def evaluate(self, expression: str) -> object:
        """The value of a JavaScript expression in the page (JSON-serialisable values)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def set_file(self, selector: str, path: Path) -> None:
        """Choose ``path`` in the file input matching ``selector`` (as a user picking a file)."""
        root = self.call("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        node = self.call("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        if not node:
            raise AssertionError(f"no element matches {selector!r}")
        self.call("DOM.setFileInputFiles", {"nodeId": node, "files": [str(path)]})

    def click_text(self, label: str) -> str:
        """Click the first innermost element whose whole text is ``label`` (e.g. a tab); return
        its tag and class, or raise when there is none."""
        script = (
            "(() => { const hits = [...document.querySelectorAll('*')].filter("
            f"e => e.children.length === 0 && e.textContent.trim() === {json.dumps(label)});"
            " if (!hits.length) return ''; hits[0].click();"
            " return hits[0].tagName + '.' + hits[0].className; })()"
        )
        result = self.call("Runtime.evaluate", {"expression": script, "returnByValue": True})
        clicked = str(result.get("result", {}).get("value", ""))
        if not clicked:
            raise AssertionError(f"no element with the text {label!r} to click")
        return clicked

    def wait_for_text(self, needles: list[str], timeout_s: float, selector: str = "body") -> str:
        """Poll the rendered text of ``selector`` until it contains every needle; return it (or
        raise, quoting what the element showed)."""
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:
            text = self.text(selector)
            if all(needle in text for needle in needles):
                return text
            time.sleep(0.5)
        missing = [needle for needle in needles if needle not in text]
        raise AssertionError(
            f"{selector} text lacks {missing} after {timeout_s} s; it shows: {text[:1500]!r}"
        )

    def screenshot(self, path: Path) -> Path:
        """Save a full-page PNG screenshot to ``path``."""
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics.get("contentSize") or {}
        width = max(int(size.get("width", self.window[0])), self.window[0])
        height = max(int(size.get("height", self.window[1])), self.window[1])
        shot = self.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
