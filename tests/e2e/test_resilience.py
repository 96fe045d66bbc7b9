"""Fallback on `error` (a connection the upstream refuses) and the circuit breaker, end to end
(README: "a per-upstream circuit breaker skips a target that keeps failing and probes it again after
cooldown_s"). The breaker's cooldown runs on the proxy's test clock: no test waits for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from tests import mock_provider
from tests.e2e.conftest import ProxyClock, body_of, free_port, routed_policy
from tests.e2e.test_routing import ask
from tests.e2e.test_sdks import client_env, only_row

CLAUDE = {"provider": "anthropic", "model": "claude-haiku-4-5"}


def fallback_policy(mock: str, primary: str, **extra: Any) -> dict[str, Any]:
    """OpenAI calls go to `primary`; gpt-4o-mini falls back to Claude on a connection error."""
    policy = routed_policy(mock, **extra)
    policy["providers"]["openai"]["upstream"] = primary
    policy["fallbacks"] = [
        {"when": {"model": "gpt-4o-mini"}, "on": ["error"], "retries": 0, "to": [CLAUDE]},
        {"when": {"model": "gpt-4o"}, "on": ["429"], "retries": 0, "to": [CLAUDE]},
    ]
    return policy


def test_a_refused_connection_falls_back_only_when_error_is_listed(make_douane, mock: str, received: list) -> None:
    d = make_douane(fallback_policy(mock, f"http://127.0.0.1:{free_port()}", breaker={"failures": 1000}))
    text, call_id = ask("openai", d, "gpt-4o-mini", "hello", stream=False)
    assert text == "echo: hello", "answered by the fallback, in the client's own format"
    assert [r["path"] for r in received] == ["/v1/messages"]
    assert body_of(received[0])["model"] == "claude-haiku-4-5"
    row = only_row(d, call_id)
    assert (row["status"], row["served_by"], row["model"]) == (200, "anthropic", "claude-haiku-4-5")
    assert "openai/gpt-4o-mini: ConnectError" in row["reason"] and "fallback: answered by" in row["reason"]
    # the rule for gpt-4o falls back on 429 only: a refused connection is the end of it
    with client_env(d), pytest.raises(openai.APIStatusError) as e:
        openai.OpenAI(api_key="sk-x", max_retries=0).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hello"}])
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_failed"
    assert "openai/gpt-4o: ConnectError" in e.value.message
    assert len(received) == 1, "Claude was not asked"
    row = only_row(d, e.value.response.headers["x-douane-request-id"])
    assert row["status"] == 502 and row["served_by"] is None and "every upstream failed" in row["error"]


def test_the_breaker_skips_a_failing_target_and_probes_it_after_cooldown(make_douane, mock: str, received: list,
                                                                         tmp_path: Path) -> None:
    clock = ProxyClock(tmp_path)
    port = free_port()
    d = make_douane(fallback_policy(mock, f"http://127.0.0.1:{port}", breaker={"failures": 2, "cooldown_s": 30}),
                    env=clock.env)

    def call() -> dict[str, Any]:
        text, call_id = ask("openai", d, "gpt-4o-mini", "hello", stream=False)
        assert text == "echo: hello"
        return only_row(d, call_id)

    failed = [call(), call()]  # the primary refuses twice: its circuit opens
    for row in failed:
        assert row["served_by"] == "anthropic" and "openai/gpt-4o-mini: ConnectError" in row["reason"]
    skipped = call()
    assert skipped["served_by"] == "anthropic"
    assert "openai/gpt-4o-mini: skipped (circuit open)" in skipped["reason"]
    primary = mock_provider.serve(port)  # the primary is back, but its circuit is still open
    try:
        clock.advance(29)
        still = call()
        assert still["served_by"] == "anthropic" and "skipped (circuit open)" in still["reason"]
        assert [r["path"] for r in received] == ["/v1/messages"] * 4, "the primary was not tried while open"
        clock.advance(1)  # the cooldown is over: one probe goes to the primary, succeeds, and closes it
        probe = call()
        after = call()
    finally:
        primary.shutdown()
        primary.server_close()
    assert (probe["served_by"], after["served_by"]) == ("openai", "openai")
    assert [r["path"] for r in received[4:]] == ["/v1/chat/completions"] * 2
    assert [body_of(r)["model"] for r in received[4:]] == ["gpt-4o-mini"] * 2
