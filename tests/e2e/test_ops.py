"""Operating douane through its admin listener: /metrics against the audit, /healthz, /readyz."""

from __future__ import annotations

import signal
import socket
import time
from collections import Counter
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from prometheus_client.parser import text_string_to_metric_families

from tests.adversarial.upstream import Upstream
from tests.e2e.conftest import Douane, free_port, routed_policy
from tests.e2e.test_sdks import client_env

EMAIL = "jane.roe@example.com"


def admin_args(port: int) -> tuple[str, ...]:
    return ("--admin-port", str(port))


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of /metrics by its name: [(labels, value)]."""
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def some_calls(d: Douane) -> None:
    """Allowed and blocked calls through each SDK, plain and streamed."""
    with client_env(d):
        oa = openai.OpenAI(api_key="sk-x", max_retries=0)
        oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
        for _ in oa.chat.completions.create(model="gpt-4o-mini", stream=True,
                                             stream_options={"include_usage": True},
                                             messages=[{"role": "user", "content": "stream please"}]):
            pass
        with pytest.raises(openai.PermissionDeniedError):
            oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"mail {EMAIL}"}])
        an = anthropic.Anthropic(api_key="sk-x", max_retries=0)
        an.messages.create(model="claude-haiku-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(anthropic.PermissionDeniedError):
            an.messages.create(model="claude-haiku-4-5", max_tokens=20,
                               messages=[{"role": "user", "content": f"write to {EMAIL}"}])
        gemini = genai.Client(api_key="x", http_options={"retry_options": {"attempts": 1}})
        gemini.models.generate_content(model="gemini-2.0-flash", contents="hi")


def test_metrics_count_what_the_audit_records(make_douane, mock: str) -> None:
    port = free_port()
    d = make_douane(routed_policy(mock, pii={"action": "block"}), args=admin_args(port))
    some_calls(d)
    rows = d.rows(expect=6)
    samples = scrape(port)

    audit = Counter((r["provider"], r["team"] or "", r["decision"]) for r in rows)
    counted: Counter[tuple[str, str, str]] = Counter()
    for labels, value in samples["douane_calls_total"]:
        counted[(labels["provider"], labels["team"], labels["decision"])] += int(value)
    assert counted == audit
    assert audit[("openai", "", "blocked")] == 1 and audit[("anthropic", "", "blocked")] == 1

    by_rule = {labels["rule"] for labels, _ in samples["douane_calls_total"] if labels["decision"] == "blocked"}
    assert by_rule == {"pii.block"}
    by_status = Counter()
    for labels, value in samples["douane_calls_total"]:
        by_status[labels["status"]] += int(value)
    assert by_status == Counter(str(r["status"]) for r in rows)

    tokens = {labels["direction"]: 0.0 for labels, _ in samples["douane_tokens_total"]}
    for labels, value in samples["douane_tokens_total"]:
        tokens[labels["direction"]] += value
    assert tokens["input"] == sum(r["input_tokens"] or 0 for r in rows) > 0
    assert tokens["output"] == sum(r["output_tokens"] or 0 for r in rows) > 0
    cost = sum(v for _, v in samples["douane_cost_usd_total"])
    assert cost == pytest.approx(sum(r["cost_usd"] or 0 for r in rows), rel=1e-9) and cost > 0

    latency_count = sum(v for labels, v in samples["douane_latency_seconds_count"])
    assert latency_count == len(rows)
    stages = {labels["stage"] for labels, _ in samples["douane_stage_seconds_count"]}
    assert {"classify", "prompt_guard", "router", "audit"} <= stages, stages
    added = samples["douane_added_seconds_count"][0][1]
    assert added == len(rows), "one observation of douane's own time per HTTP call"
    upstream = {labels["provider"]: v for labels, v in samples["douane_upstream_seconds_count"]}
    assert upstream == {"openai": 2, "anthropic": 1, "gemini": 1}, "blocked calls never went upstream"
    assert samples["douane_audit_writer_ok"][0][1] == 1
    assert samples["douane_audit_queue_depth"][0][1] == 0
    assert samples["douane_calls_in_flight"][0][1] == 0
    assert "douane_redis_up" not in samples, "no Redis configured"


def test_healthz_and_readyz(make_douane, mock: str) -> None:
    port = free_port()
    make_douane(routed_policy(mock), args=admin_args(port))
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(trust_env=False, timeout=10) as client:  # one keep-alive connection for all
        assert client.get(f"{base}/healthz").status_code == 200
        ready = client.get(f"{base}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["audit_writer"]["ok"] is True
        assert "redis" not in ready.json()["checks"]
        assert client.get(f"{base}/nope").status_code == 404
        assert client.post(f"{base}/metrics").status_code == 405


def test_readyz_says_503_while_redis_is_unreachable_and_200_once_it_answers(make_douane, mock: str,
                                                                            redis_url: str) -> None:
    dead = free_port()
    port = free_port()
    policy = routed_policy(mock, state={"backend": "redis", "url": f"redis://127.0.0.1:{dead}/0"})
    make_douane(policy, args=admin_args(port))
    r = httpx.get(f"http://127.0.0.1:{port}/readyz", trust_env=False, timeout=10)
    assert r.status_code == 503
    assert r.json()["checks"]["redis"]["ok"] is False
    assert f"127.0.0.1:{dead}" in r.json()["checks"]["redis"]["detail"]
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", trust_env=False).status_code == 200
    assert scrape(port)["douane_redis_up"][0][1] == 0

    port2 = free_port()
    team = f"ops-{port2}"  # the session's Redis is shared: a team of its own starts at zero
    make_douane(routed_policy(mock, state={"backend": "redis", "url": redis_url},
                              teams={team: {"budget_usd_per_day": 5.0}}), args=admin_args(port2))
    r = httpx.get(f"http://127.0.0.1:{port2}/readyz", trust_env=False, timeout=10)
    assert r.status_code == 200, r.text
    samples = scrape(port2)
    assert samples["douane_redis_up"][0][1] == 1
    assert samples["douane_budget_used_ratio"] == [({"rule": f"teams.{team}.budget_usd_per_day"}, 0.0)]


def test_readyz_says_503_while_draining(make_douane) -> None:
    """SIGTERM: /readyz turns 503 while the calls in flight finish, so load balancers send no more."""
    upstream = Upstream()
    upstream.script.pause_after = 2  # the stream waits for the test, holding the proxy in its drain
    try:
        port = free_port()
        d = make_douane({"version": 1, "providers": {"openai": {"upstream": upstream.url}}},
                        args=(*admin_args(port), "--grace", "20"))
        ready = f"http://127.0.0.1:{port}/readyz"
        assert httpx.get(ready, trust_env=False).status_code == 200
        with d.http() as client, client.stream("POST", "https://api.openai.com/v1/chat/completions", json={
                "model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status_code == 200
            assert upstream.script.paused.wait(10), "the upstream never paused"
            assert d.proc is not None
            d.proc.send_signal(signal.SIGTERM)
            answer = wait_for(lambda: httpx.get(ready, trust_env=False, timeout=5),
                              lambda resp: resp.status_code == 503, 10)
            assert answer.json()["checks"]["serving"]["ok"] is False
            upstream.script.resume.set()
            body = b"".join(r.iter_raw())
        assert b"[DONE]" in body, "the call in flight was let finish"
        assert d.stop() == 0
    finally:
        upstream.close()


def wait_for(read: Any, done: Any, timeout: float) -> Any:
    """Poll `read` until `done(value)`; fail loudly at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last value {value!r}")
        time.sleep(0.05)


def test_a_taken_admin_port_stops_the_start_with_a_reason(make_douane, mock: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = make_douane(routed_policy(mock), start=False, args=admin_args(port))
        d.start(wait=False)
        assert d.proc is not None
        assert d.proc.wait(30) == 1
        log = d.log()
        assert "cannot start" in log and "admin listener" in log and str(port) in log, log


def test_no_admin_listener_unless_asked(make_douane, mock: str) -> None:
    d = make_douane(routed_policy(mock))
    assert "/metrics" not in d.log()
