"""`douane top` in a pseudo-terminal, against a running proxy's admin endpoint, with traffic flowing."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import httpx

from tests.e2e.conftest import ROOT, free_port, routed_policy
from tests.e2e.test_governance import PASSWORD, digest

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")
CHAT = "https://api.openai.com/v1/chat/completions"
SEP = r"[\s│┃|]+"  # between a table's cells


class Terminal:
    """A program on a pseudo-terminal of 140x50; `screen` is everything it printed, escapes removed."""

    def __init__(self, args: list[str]):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 140, 0, 0))
        env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
        env.update(TERM="xterm-256color", COLUMNS="140", LINES="50",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.raw = b""
        self.pos = 0  # where in `screen` the next read_until starts looking

    def read_until(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """Read until the output after the previous match matches `pattern`; fail loudly at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.compile(pattern).search(self.screen, self.pos)
            if m:
                self.pos = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not on screen within {timeout} s; screen:\n{self.screen[-6000:]}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    self.raw += os.read(self.master, 65536)
                except OSError:  # the program ended
                    raise AssertionError(f"top ended; screen:\n{self.screen[-3000:]}") from None

    @property
    def screen(self) -> str:
        return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.close(self.master)
        return self.proc.returncode


def test_top_shows_live_numbers_from_the_admin_endpoint(make_douane, mock: str) -> None:
    port = free_port()
    policy = routed_policy(mock, pii={"action": "block"},
                           clients=[{"name": "support-bot", "team": "support", "key_sha256": digest(PASSWORD)}],
                           teams={"support": {"models": ["*"]}})
    d = make_douane(policy, args=("--admin-port", str(port)))
    creds = f"support-bot:{PASSWORD}"
    with d.http(creds) as client:
        for i in range(4):
            assert client.post(CHAT, json={"model": "gpt-4o-mini", "messages": [
                {"role": "user", "content": f"hello {i}"}]}).status_code == 200
        assert client.post(CHAT, json={"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": "mail jane.roe@example.com"}]}).status_code == 403
        term = Terminal([sys.executable, "-m", "douane.cli", "top", "--admin-port", str(port), "--interval", "0.5"])
        try:
            first = term.read_until(r"calls/s (\d+\.\d\d)")
            assert float(first.group(1)) > 0, "the first frame's rates are since the proxy started"
            term.read_until(rf"support{SEP}[\d.]+{SEP}[\d,]+{SEP}[\d,]+{SEP}\$[\d.]+")  # tokens and cost by team
            term.read_until(rf"pii\.block{SEP}\d+{SEP}1\b")  # blocked once since start
            # live: new traffic shows up in the next frames
            assert client.post(CHAT, json={"model": "gpt-4o-mini", "messages": [
                {"role": "user", "content": "again jane.roe@example.com"}]}).status_code == 403
            term.read_until(rf"pii\.block{SEP}\d+{SEP}2\b")
            term.read_until(r"calls/s 0\.00")  # a quiet frame first
            for _ in range(3):
                client.post(CHAT, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
            term.read_until(r"calls/s (?!0\.00)\d+\.\d\d")  # a frame whose window saw them
            term.read_until(rf"openai{SEP}[\d.]+{SEP}[\d.]+{SEP}[\d.]+ ms", timeout=5)  # the same frame's upstream p50
        finally:
            code = term.close()
    assert code == 0, term.screen[-2000:]


def test_top_once_prints_one_frame_and_an_unreachable_endpoint_is_an_error(make_douane, mock: str) -> None:
    port = free_port()
    make_douane(routed_policy(mock), args=("--admin-port", str(port)))
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    env["PYTHONPATH"] = str(ROOT)
    once = subprocess.run([sys.executable, "-m", "douane.cli", "top", "--admin-port", str(port), "--once"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert once.returncode == 0, once.stderr
    assert "calls/s 0.00" in once.stdout and "blocks by rule" in once.stdout
    dead = free_port()
    failed = subprocess.run([sys.executable, "-m", "douane.cli", "top", "--admin-port", str(dead), "--once"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert failed.returncode == 1
    assert f"127.0.0.1:{dead}/metrics" in failed.stderr and "--admin-port" in failed.stderr
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", trust_env=False).status_code == 200
