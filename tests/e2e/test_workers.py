"""`douane run --workers 2`, end to end through the openai SDK: one port, one store, exact limits."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import yaml

from tests.e2e.conftest import ROOT, Douane, ProxyClock, free_port, routed_policy, wait_for
from tests.e2e.test_audit_chain import verify
from tests.e2e.test_governance import PASSWORD, digest
from tests.e2e.test_sdks import client_env

WORKERS = ("--workers", "2")
CALLS = 24  # connections of their own, at once: each worker takes some (see worker_records)


def start(make_douane: Any, policy: dict[str, Any], env: dict[str, str] | None = None,
          args: tuple[str, ...] = ()) -> Douane:
    d = make_douane(policy, args=(*WORKERS, *args), env=env)
    wait_for("both workers ready", lambda: "worker 2 of 2 ready" in d.log() and "worker 1 of 2 ready" in d.log(), d)
    return d


def worker_pids(d: Douane) -> dict[int, int]:
    """Worker index -> pid of its latest process ready to serve, from the parent's log."""
    return {int(index): int(pid) for index, pid in re.findall(r"worker (\d) of 2 ready \(pid (\d+)", d.log())}


def worker_records(d: Douane) -> dict[int, int]:
    """Records each worker handed to the parent (its log at stop): which worker served how many calls."""
    found = re.search(r"records received from the workers: (.*?);", d.log())
    assert found, d.log()[-3000:]
    return {int(i): int(n) for i, n in re.findall(r"worker (\d+): (\d+)", found.group(1))}


def sdk_calls(d: Douane, n: int, model: str = "mock-slow-1", credentials: str = "") -> list[tuple[int, str]]:
    """`n` calls at once, each from an SDK client of its own (a connection of its own): (status, request id)."""
    def one(i: int) -> tuple[int, str]:
        client = openai.OpenAI(api_key="sk-x", max_retries=0)
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": f"call {i}"}])
            return raw.status_code, raw.headers["x-douane-request-id"]
        except openai.APIStatusError as e:
            return e.status_code, e.response.headers.get("x-douane-request-id", "")
        except openai.APIConnectionError:  # its worker was killed mid-call
            return 0, ""
        finally:
            client.close()

    with client_env(d):
        if credentials:
            os.environ["HTTPS_PROXY"] = os.environ["https_proxy"] = f"http://{credentials}@127.0.0.1:{d.port}"
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, range(n)))


def test_calls_land_on_both_workers_and_one_store_holds_every_row(make_douane: Any, mock: str) -> None:
    d = start(make_douane, routed_policy(mock))
    results = sdk_calls(d, CALLS)
    assert [status for status, _ in results] == [200] * CALLS
    rows = d.rows("SELECT id, hash, instance_id FROM requests", expect=CALLS)
    assert {r["id"] for r in rows} == {call_id for _, call_id in results}
    assert len({r["instance_id"] for r in rows}) == 1, "one writer, one hash chain"
    assert d.stop() == 0, d.log()[-3000:]
    served = worker_records(d)
    assert sum(served.values()) == CALLS
    assert served[1] > 0 and served[2] > 0, f"every call on one worker: {served}"
    code, report = verify(d)
    assert code == 0, report


def test_sigterm_drains_every_worker_and_loses_no_call(make_douane: Any, mock: str, received: list) -> None:
    d = start(make_douane, routed_policy(mock))
    with ThreadPoolExecutor(1) as pool:
        calls = pool.submit(sdk_calls, d, 16)
        wait_for("calls in flight at the mock", lambda: len(received) >= 8, d, timeout=60)
        assert d.proc is not None
        d.proc.send_signal(signal.SIGTERM)
        results = calls.result(timeout=120)
    assert d.proc.wait(60) == 0, d.log()[-3000:]
    # a call the stopping workers no longer accepted failed to connect, with no row; each answered one has its row
    answered = {call_id for status, call_id in results if status == 200}
    assert len(answered) >= 8, results
    rows = d.rows("SELECT id, status FROM requests")
    assert answered <= {r["id"] for r in rows}
    assert all(r["status"] == 200 for r in rows)
    assert "douane stopped: " in d.log() and "NOT written" not in d.log()


def test_limits_are_exact_across_workers_with_redis(make_douane: Any, mock: str, redis_url: str,
                                                    tmp_path: Path) -> None:
    redis.Redis.from_url(redis_url).flushall()
    policy = routed_policy(mock, state={"backend": "redis", "url": redis_url},
                           clients=[{"name": "bot", "team": "support", "key_sha256": digest(PASSWORD)}],
                           teams={"support": {"models": ["*"], "requests_per_minute": 10}})
    d = start(make_douane, policy, env=ProxyClock(tmp_path).env)  # the whole burst in one minute
    results = sdk_calls(d, 30, credentials=f"bot:{PASSWORD}")
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 10 + [429] * 20
    d.rows(expect=30)
    assert d.stop() == 0, d.log()[-3000:]
    served = worker_records(d)
    assert served[1] > 0 and served[2] > 0, f"the burst was meant to cross both workers: {served}"


def test_limits_counted_in_memory_are_refused_with_workers(make_douane: Any, mock: str) -> None:
    policy = routed_policy(mock, teams={"support": {"models": ["*"], "requests_per_minute": 10}})
    d = make_douane(policy, start=False, args=WORKERS)
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(60) == 1
    assert "teams.support" in d.log() and "state.backend: memory" in d.log() and "backend: redis" in d.log()


def test_sighup_reaches_every_worker(make_douane: Any, mock: str) -> None:
    d = start(make_douane, routed_policy(mock))
    new_policy = routed_policy(mock, pii={"action": "block"})
    d.policy_path.write_text(yaml.safe_dump(new_policy))
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    wait_for("both workers on the new policy",
             lambda: len(re.findall(r"worker \d \(pid \d+\) now serves", d.log())) == 2
             and "every worker serves policy_hash" in d.log(), d)
    new_hash = re.findall(r"every worker serves policy_hash (\w+)", d.log())[-1]
    results = sdk_calls(d, CALLS)
    assert [status for status, _ in results] == [200] * CALLS
    rows = d.rows("SELECT policy_hash FROM requests", expect=CALLS)
    assert {r["policy_hash"] for r in rows} == {new_hash}
    assert d.stop() == 0
    served = worker_records(d)
    assert served[1] > 0 and served[2] > 0, served


def test_a_killed_worker_is_replaced_while_the_port_serves(make_douane: Any, mock: str) -> None:
    d = start(make_douane, routed_policy(mock))
    victim = worker_pids(d)[1]
    os.kill(victim, signal.SIGKILL)
    # the port never closes: the other worker answers meanwhile
    assert [status for status, _ in sdk_calls(d, 4, model="gpt-4o-mini")] == [200] * 4
    wait_for("a new worker 1 ready", lambda: worker_pids(d)[1] != victim, d)
    assert f"worker 1 (pid {victim}) was killed by SIGKILL" in d.log()
    assert f"worker 1 restarted (pid {worker_pids(d)[1]})" in d.log()
    results = sdk_calls(d, CALLS)
    assert [status for status, _ in results] == [200] * CALLS
    d.rows(expect=CALLS + 4)
    assert d.stop() == 0, d.log()[-3000:]
    assert "1 restart(s)" in d.log()
    assert worker_records(d)[1] > 0, "the new worker 1 serves"
    code, report = verify(d)
    assert code == 0, report


def test_a_worker_killed_mid_call_loses_only_its_calls_in_flight(make_douane: Any, mock: str, received: list) -> None:
    d = start(make_douane, routed_policy(mock))
    before = sdk_calls(d, 8, model="gpt-4o-mini")
    kept = {r["id"] for r in d.rows("SELECT id FROM requests", expect=8)}
    with ThreadPoolExecutor(1) as pool:
        calls = pool.submit(sdk_calls, d, 16)  # half a second each at the mock
        wait_for("calls in flight at the mock", lambda: len(received) >= 8 + 8, d, timeout=60)
        os.kill(worker_pids(d)[1], signal.SIGKILL)
        during = calls.result(timeout=120)
    answered = {call_id for status, call_id in during if status == 200}
    assert answered and len(answered) < 16, during  # the other worker's calls; the killed one's were cut
    wait_for("a new worker 1 ready", lambda: len(re.findall(r"worker 1 of 2 ready", d.log())) == 2, d)
    assert d.stop() == 0, d.log()[-3000:]
    rows = {r["id"] for r in d.rows("SELECT id FROM requests")}
    assert kept <= rows, "what a worker handed over before it was killed stays"
    assert answered <= rows, "every answered call has its row"
    assert {call_id for _, call_id in before} <= rows
    code, report = verify(d)
    assert code == 0, report


def test_the_admin_port_is_served_once_for_every_worker(make_douane: Any, mock: str) -> None:
    admin = free_port()
    d = start(make_douane, routed_policy(mock), args=("--admin-port", str(admin)))
    results = sdk_calls(d, CALLS)
    assert [status for status, _ in results] == [200] * CALLS
    d.rows(expect=CALLS)
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=10) as r:
        ready = json.load(r)
    assert ready["ready"] and ready["checks"]["worker_1"]["ok"] and ready["checks"]["worker_2"]["ok"]
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as r:
        text = r.read().decode()
    calls = sum(float(v) for v in re.findall(r'^douane_calls_total\{[^}]*decision="allowed"[^}]*\} (\S+)$', text,
                                               re.M))
    assert calls == CALLS, text[:2000]
    assert re.search(r"^douane_workers_ready 2\.0$", text, re.M)
    assert re.search(rf"^douane_audit_records_written {CALLS}\.0$", text, re.M)
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    env["PYTHONPATH"] = str(ROOT)
    top = subprocess.run([sys.executable, "-m", "douane.cli", "top", "--admin-port", str(admin), "--once"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert top.returncode == 0, top.stderr
    window = float(re.search(r"rates over the last ([\d.]+) s", top.stdout).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"calls/s ([\d.]+)", top.stdout).group(1))  # type: ignore[union-attr]
    # both workers' calls in one view (one worker's share would be about half; the figures are rounded)
    assert rate * window == pytest.approx(CALLS, abs=1.0), top.stdout
    assert d.stop() == 0


def test_base_url_mode_serves_with_workers(make_douane: Any, mock: str) -> None:
    d = start(make_douane, routed_policy(mock), args=("--mode", "reverse"))
    client = openai.OpenAI(api_key="sk-x", base_url=f"http://127.0.0.1:{d.port}/openai/v1", max_retries=0,
                           http_client=httpx.Client(trust_env=False))
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert raw.status_code == 200
    assert d.rows(f"SELECT id FROM requests WHERE id = '{raw.headers['x-douane-request-id']}'", expect=1)
    assert d.stop() == 0


def test_transparent_mode_serves_with_workers(make_douane: Any, mock: str, received: list) -> None:
    """The kernel's redirect lands on the shared socket; each worker reads the original destination
    from the connection it accepted (the README's recipe, as tests/e2e/test_transparent.py runs it)."""
    from tests.e2e.test_transparent import EMAIL, PYTHON_SDK, Namespace, assert_redacted_and_audited
    from tests.e2e.test_transparent import workload_env as transparent_env

    ns = Namespace()
    try:
        ns.create()
        d = make_douane(routed_policy(mock), start=False,
                        args=(*WORKERS, "--mode", "transparent", "--listen-host", ns.host_ip))
        ns.redirect_to(d.port)
        d.start()
        wait_for("both workers ready", lambda: "worker 2 of 2 ready" in d.log() and "worker 1 of 2 ready" in d.log(), d)
        done = ns.run([sys.executable, "-c", PYTHON_SDK, "plain", f"Write to {EMAIL} today"], transparent_env(d))
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}\n{d.log()[-2000:]}"
        got = json.loads(done.stdout.strip().splitlines()[-1])
        assert got["text"] == "echo: Write to <EMAIL_ADDRESS> today"
        assert_redacted_and_audited(d, received, got["id"], "openai", False, "api.openai.com")
        assert d.stop() == 0
    finally:
        ns.destroy()


def test_a_chats_next_turn_gets_the_same_pseudonyms_on_either_worker(make_douane: Any, mock: str,
                                                                    received: list) -> None:
    """Pseudonyms are numbered by first appearance in the history the client resends, so any worker
    derives the same ones for the next turn (the per-worker prefix memo only saves the rescan) and
    restores them in its answer."""
    from tests.e2e.conftest import body_of
    from tests.e2e.test_guardrails import EMAIL, PHONE

    d = start(make_douane, routed_policy(mock, pii={"action": "pseudonymize"}))
    history = [{"role": "user", "content": f"I am {EMAIL}"}, {"role": "assistant", "content": f"echo: I am {EMAIL}"},
               {"role": "user", "content": f"and {PHONE}, still {EMAIL}"}]

    def next_turn(_: int) -> str:
        client = openai.OpenAI(api_key="sk-x", max_retries=0)  # a connection of its own
        try:
            reply = client.chat.completions.create(model="mock-slow-1", messages=history)
            return reply.choices[0].message.content or ""
        finally:
            client.close()

    with client_env(d), ThreadPoolExecutor(CALLS) as pool:
        answers = list(pool.map(next_turn, range(CALLS)))
    assert answers == [f"echo: and {PHONE}, still {EMAIL}"] * CALLS, "each answer restored"
    sent = [body_of(r)["messages"] for r in received[-CALLS:]]
    assert all(m[0]["content"] == "I am <EMAIL_ADDRESS_1>" and
               m[2]["content"] == "and <PHONE_NUMBER_1>, still <EMAIL_ADDRESS_1>" for m in sent), sent[:2]
    assert d.stop() == 0
    served = worker_records(d)
    assert served[1] > 0 and served[2] > 0, served
