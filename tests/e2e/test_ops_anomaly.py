"""Anomaly detection through the real proxy: a fleet of two instances sharing Redis, a spike, a
quarantine both instances enforce, and `douane anomaly clear` lifting it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import redis

from tests.e2e.conftest import ROOT, free_port, routed_policy
from tests.e2e.test_governance import PASSWORD, digest
from tests.e2e.test_ops import scrape, wait_for
from tests.e2e.test_sdks import client_env

CLIENT = "batch-job"


def seed_history(url: str, minutes: int, calls_per_minute: int) -> None:
    """The minutes before now, as another instance of the fleet would have left them in Redis."""
    r = redis.Redis.from_url(url)
    now = int(time.time() // 60)
    for m in range(now - minutes, now):
        r.hset(f"douane:anomaly:m:client:{CLIENT}:{m}", mapping={
            "calls": calls_per_minute, "tokens": 100 * calls_per_minute, "cost": 0.0, "errors": 0, "blocks": 0})


class Webhook:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                hook.bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/douane"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "douane.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_a_spike_quarantines_the_client_on_every_instance_until_cleared(make_douane, mock: str,
                                                                        redis_url: str) -> None:
    shared = redis.Redis.from_url(redis_url)  # the session's Redis: only this test's keys are removed
    for key in shared.scan_iter("douane:anomaly:*"):
        shared.delete(key)
    hook = Webhook()
    seed_history(redis_url, minutes=15, calls_per_minute=1)
    policy = routed_policy(
        mock, state={"backend": "redis", "url": redis_url},
        clients=[{"name": CLIENT, "team": "research", "key_sha256": digest(PASSWORD)}],
        teams={"research": {"models": ["*"]}},
        anomaly={"action": "block", "warmup_minutes": 10, "scopes": ["client"], "signals": ["calls"],
                 "floors": {"calls": 5}, "webhook": hook.url})
    port_a, port_b = free_port(), free_port()
    a = make_douane(policy, args=("--admin-port", str(port_a)))
    b = make_douane(policy, args=("--admin-port", str(port_b)))
    # baseline: 1 call/min; threshold max(1 + 6 * sqrt(1), 3 * 1, 5) = 7 calls in a minute, fleet-wide
    with client_env(a):
        os.environ["HTTPS_PROXY"] = os.environ["https_proxy"] = f"http://{CLIENT}:{PASSWORD}@127.0.0.1:{a.port}"
        oa = openai.OpenAI(api_key="sk-x", max_retries=0)
        refused = None
        for i in range(30):
            try:
                oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"job {i}"}])
            except openai.PermissionDeniedError as e:
                refused = e
                break
        assert refused is not None, "30 calls in a minute against a baseline of 1 were never stopped"
        assert "anomaly.block" in str(refused) and f"douane anomaly clear {CLIENT}" in str(refused)
    rows = a.rows("SELECT id, reason, decision FROM requests ORDER BY ts", expect=i + 1)
    assert any((r["reason"] or "").startswith(f"anomaly.calls: client {CLIENT}") for r in rows), \
        "the call that tripped it says so in its row"
    assert rows[-1]["decision"] == "blocked"

    # the other instance learns the quarantine from Redis (refreshed every 2 s)
    def b_status() -> int:
        with b.http(f"{CLIENT}:{PASSWORD}") as client:
            return client.post("https://api.openai.com/v1/chat/completions", json={
                "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "from b"}]}).status_code

    assert wait_for(b_status, lambda s: s == 403, 15) == 403
    listed = cli("anomaly", "list", "--admin-port", str(port_b), "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [(r["scope"], r["name"], r["kind"]) for r in json.loads(listed.stdout)] == [("client", CLIENT, "block")]
    anomalies = {lb["signal"]: v for lb, v in scrape(port_a)["douane_anomalies_total"]}
    assert anomalies == {"calls": 1}
    assert wait_for(lambda: hook.bodies, bool, 10)[0]["subject"] == CLIENT

    cleared = cli("anomaly", "clear", CLIENT, "--admin-port", str(port_b))
    assert cleared.returncode == 0 and "cleared" in cleared.stdout, cleared.stderr
    assert b_status() == 200, "lifted at once where it was cleared"
    with a.http(f"{CLIENT}:{PASSWORD}") as client:
        def a_status() -> int:
            return client.post("https://api.openai.com/v1/chat/completions", json={
                "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "from a"}]}).status_code
        assert wait_for(a_status, lambda s: s == 200, 15) == 200, "and on the other instance within a refresh"
    again = cli("anomaly", "clear", CLIENT, "--admin-port", str(port_a))
    assert again.returncode == 1 and "neither quarantined nor throttled" in again.stderr
    hook.server.shutdown()


def test_anomaly_commands_need_a_running_admin_endpoint() -> None:
    dead = free_port()
    r = cli("anomaly", "clear", "someone", "--admin-port", str(dead))
    assert r.returncode == 1 and f"127.0.0.1:{dead}" in r.stderr and "--admin-port" in r.stderr
    r = cli("anomaly", "list")
    assert r.returncode == 2 and "--admin-port" in r.stderr
