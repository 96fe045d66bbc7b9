"""`douane audit report html` opened in a real headless Chromium (Debian's package), driven over the
DevTools protocol: a screenshot of the page, its charts in the DOM, and no console error."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from douane.ops.simulate import synthetic_audit
from tests.e2e.conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium; `open(url)` loads a page and returns what its console and log said."""

    def __init__(self) -> None:
        assert CHROMIUM, "these tests need Debian's chromium (./scripts/test installs it: apt-get install chromium)"
        self.profile = tempfile.mkdtemp(prefix="douane-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # Chromium says where its DevTools listen, then keeps logging
            m = re.search(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)", line)
            if m:
                self.port = int(m.group(2))
                break
            if time.monotonic() > deadline:
                raise AssertionError("chromium did not start its DevTools")
        else:
            raise AssertionError(f"chromium exited {self.proc.wait()} before its DevTools listened")
        self.ids = itertools.count(1)

    def open(self, url: str, width: int = 900, height: int = 1800) -> tuple[list[str], bytes, dict[str, Any]]:
        """(console errors and failed loads, a PNG screenshot, facts read from the DOM)."""
        target = httpx.put(f"http://127.0.0.1:{self.port}/json/new?about:blank", timeout=30).json()
        errors: list[str] = []
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
            def send(method: str, **params: Any) -> dict[str, Any]:
                n = next(self.ids)
                ws.send(json.dumps({"id": n, "method": method, "params": params}))
                while True:
                    message = json.loads(ws.recv(timeout=60))
                    if message.get("id") == n:
                        assert "error" not in message, message
                        return message.get("result", {})
                    self._note(message, errors)

            for domain in ("Page", "Runtime", "Log"):
                send(f"{domain}.enable")
            send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
            send("Page.navigate", url=url)
            while True:  # until the page has loaded, noting what it logs meanwhile
                message = json.loads(ws.recv(timeout=60))
                self._note(message, errors)
                if message.get("method") == "Page.loadEventFired":
                    break
            facts = json.loads(send("Runtime.evaluate", returnByValue=True, expression="""JSON.stringify({
                title: document.title, charts: document.querySelectorAll('svg').length,
                lines: document.querySelectorAll('svg polyline').length,
                bars: document.querySelectorAll('svg rect').length,
                patterns: document.querySelectorAll('#patterns tr').length - 1,
                scripts: document.scripts.length,
                text: document.body.innerText})""")["result"]["value"])
            shot = base64.b64decode(send("Page.captureScreenshot", format="png")["data"])
            send("Runtime.evaluate", expression="1")  # collect anything logged while capturing
        return errors, shot, facts

    @staticmethod
    def _note(message: dict[str, Any], errors: list[str]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            errors.append("exception: " + params["exceptionDetails"].get("text", ""))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"log ({params['entry']['source']}): {params['entry']['text']}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = Browser()
    yield b
    b.close()


def test_the_browser_check_catches_console_errors_and_failed_loads(browser: Browser, tmp_path: Path) -> None:
    """The check below is worth something only if it sees errors when there are some."""
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><title>x</title><script>console.error('planted error')</script>"
                    "<img src='missing.png'><p>hello</p>")
    errors, _, facts = browser.open(page.as_uri())
    assert any("planted error" in e for e in errors), errors
    assert any("missing.png" in e or "ERR_FILE_NOT_FOUND" in e for e in errors), errors
    assert facts["scripts"] == 1


def test_the_html_report_renders_its_charts_without_console_errors(browser: Browser, tmp_path: Path) -> None:
    db = tmp_path / "audit.duckdb"
    planted = synthetic_audit(str(db), 3000, seed=21)
    out = tmp_path / "report.html"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "douane.cli", "audit", "report", "html", "--out", str(out), "--db",
                           str(db)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page, "self-contained, no script"

    errors, shot, facts = browser.open(out.as_uri())
    (tmp_path / "report.png").write_bytes(shot)
    assert errors == []
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 30_000, "a screenshot of a page with content"
    assert facts["title"] == "douane report: last 30d"
    assert facts["charts"] == 3 and facts["lines"] == 3, "cost over time: one line per team"
    assert facts["bars"] > 5, "latency histogram and blocks by rule"
    assert facts["patterns"] == 7, "the seven planted prompt templates"
    text = facts["text"]
    assert "3,000" in text and f"{planted['blocked']:,}" in text
    for rule in ("pii.block", "injection.block"):
        assert rule in text


def test_text_from_the_audit_cannot_inject_markup(tmp_path: Path) -> None:
    from douane.ops.html_report import ReportData, render
    from douane.ops.insight import Pattern

    data = ReportData("7d", {"calls": 1, "cost_usd": 0.0, "blocked": 1, "errors": 0, "input_tokens": 0,
                             "output_tokens": 0, "first": "-", "last": "-"},
                      {"<script>alert(1)</script>": [("a", 1.0)]}, ["a"], [], {},
                      [("<img src=x onerror=alert(1)>", 1)],
                      [Pattern("t", "<script>alert(2)</script>", 1, 2, 0.0)])
    page = render(data, "<b>db</b>")
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>db</b>" not in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page
