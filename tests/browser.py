"""Headless Chromium for tests, over the DevTools protocol: open a page, wait for texts, evaluate, take screenshots.

Debian's /usr/bin/chromium, started headless with a profile of its own; screenshots go to the test artifacts folder
(`test-artifacts/` at the repository root, or RELANCE_TEST_ARTIFACTS), so a failure leaves what the page showed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

PROJECT = Path(__file__).resolve().parents[1]
WINDOW = (1400, 1000)


def artifacts_dir() -> Path:
    """Where tests leave files to look at after the run (screenshots): RELANCE_TEST_ARTIFACTS or test-artifacts/."""
    folder = Path(os.environ.get("RELANCE_TEST_ARTIFACTS") or PROJECT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Browser:
    """One page of a headless Chromium, driven over its DevTools websocket."""

    def __init__(self, ws, name: str) -> None:
        self.ws, self.name = ws, name
        self._next_id = 0
        self._events: list[dict] = []  # events that arrived while waiting for an answer, kept for wait_for_load

    def call(self, method: str, **params) -> dict:
        """One DevTools command, its result (an error answer fails the test)."""
        self._next_id += 1
        self.ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == self._next_id:
                assert "error" not in message, f"{method}: {message['error']}"
                return message.get("result", {})
            if "method" in message:
                self._events.append(message)

    def wait_for_load(self) -> None:
        """Until the page's load event (of the navigation under way)."""
        while True:
            event = self._events.pop(0) if self._events else json.loads(self.ws.recv(timeout=30))
            if event.get("method") == "Page.loadEventFired":
                return

    def open(self, url: str) -> None:
        """Navigate to `url` and wait until it has loaded."""
        self._events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for_load()

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in answer, f"{expression!r} raised: {answer['exceptionDetails']}"
        return answer["result"].get("value")

    def text(self) -> str:
        """What the page shows: document.body.innerText."""
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, *texts: str, within: float = 30) -> str:
        """The page's innerText once it contains every one of `texts` (a single-page app renders after its load
        event); after `within` seconds the test fails with what the page showed and a screenshot."""
        end = time.monotonic() + within
        while True:
            shown = self.text()
            missing = [t for t in texts if t not in shown]
            if not missing:
                return shown
            if time.monotonic() > end:
                shot = self.screenshot("failed")
                pytest.fail(f"the page never showed {missing} within {within:.0f} s (screenshot {shot}); it showed:\n"
                            f"{shown[:8000]}")
            time.sleep(0.25)  # polling a page that renders on its own, not waiting for time to pass

    def screenshot(self, label: str) -> Path:
        """A PNG of the whole page, in the artifacts folder as NAME-LABEL.png."""
        metrics = self.call("Page.getLayoutMetrics")
        content, view = metrics["cssContentSize"], metrics["cssLayoutViewport"]
        # the larger of the two: a page laid out in its own scrolling panes (an SPA) reports a small content size
        width, height = max(content["width"], view["clientWidth"]), max(content["height"], view["clientHeight"])
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)["data"]
        path = artifacts_dir() / f"{_safe(self.name)}-{_safe(label)}.png"
        path.write_bytes(base64.b64decode(data))
        return path


@contextmanager
def chromium(profile: Path, name: str) -> Iterator[Browser]:
    """A headless Chromium with its profile in `profile`, one blank page open; `name` prefixes its screenshots."""
    from websockets.sync.client import connect

    program = shutil.which("chromium") or shutil.which("chromium-browser")
    assert program, "Debian's chromium is needed for this test: apt-get install chromium"
    process = subprocess.Popen(
        [program, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        for line in process.stderr:  # DevTools listening on ws://127.0.0.1:PORT/devtools/browser/...
            if (found := re.search(r"ws://127\.0\.0\.1:(\d+)/", line)) is not None:
                break
        else:
            pytest.fail(f"chromium exited ({process.poll()}) without a DevTools address")
        # the rest of its chatter is read and dropped: a full pipe would stop chromium
        threading.Thread(target=process.stderr.read, daemon=True).start()
        pages = httpx.get(f"http://127.0.0.1:{found.group(1)}/json/list", timeout=10).json()
        [page] = [t for t in pages if t["type"] == "page"]
        with connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
            browser = Browser(ws, name)
            browser.call("Page.enable")
            yield browser
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _safe(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text)[:120]
