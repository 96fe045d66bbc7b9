"""Where a call's time goes inside douane, stage by stage: every guard on (scripts/bench's "every guard"
policy), the bench's ~2 KB prompt with fresh PII and the mock's echo as the answer, each addon's hooks
timed in-process on the thread's CPU clock (another process on the machine does not count), median
per call. Then the same for the first and last turns of the 40-turn chat. No network, no TLS, no
mitmproxy event loop: what scripts/bench adds on top of these is mitmproxy's own work for douane's
hooks and the audit writer's thread. Writes its section of BENCHMARKS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

import yaml  # noqa: E402
from bench import payload, prompt  # noqa: E402
from benchmarks_md import write_section  # noqa: E402
from mitmproxy import http  # noqa: E402
from mitmproxy.test import tflow, tutils  # noqa: E402

import addons  # noqa: E402
from addons.flows import call_of  # noqa: E402
from douane import mitmfix  # noqa: E402
from douane.gateway import Gateway  # noqa: E402
from douane.policy.loader import load_policy  # noqa: E402
from douane.runner import settle_garbage_collector, warm  # noqa: E402

GUARDS = {"pii": {"action": "pseudonymize"}, "injection": {"action": "monitor", "model": True},
          "output": {"secrets": "redact", "pii": "redact"}, "sanitize": {"action": "strip"},
          "moderation": {"action": "monitor"}}
HOOKS = ("requestheaders", "request", "responseheaders", "response")


class NoWriter:
    """The audit writer's thread is not the loop's time: rows are counted, not written."""

    def __init__(self) -> None:
        self.rows = 0

    def submit(self, record: object) -> None:
        self.rows += 1


class Timed:
    """Each stage's hooks, timed on this thread's CPU clock, by the turn of the call."""

    def __init__(self, gw: Gateway):
        chain = addons.build(gw)
        pipeline = next(a for a in chain if isinstance(a, addons.Pipeline))
        self.outer = [a for a in chain if a is not pipeline]
        self.stages = list(pipeline.stages)
        self.times: dict[str, list[float]] = defaultdict(list)  # per stage, its time in each call (us)
        self._current: dict[str, float] = defaultdict(float)

    async def hook(self, name: str, flow: http.HTTPFlow) -> None:
        for addon in self.outer[:1]:  # the generation binding comes first, as in the proxy
            await _run(getattr(addon, name, None), flow)
        for stage in self.stages:
            func = getattr(stage, name, None)
            if func is None:
                continue
            start = time.thread_time()
            await _run(func, flow)
            self._current[addons.stage_name(stage)] += time.thread_time() - start

    async def call(self, body: bytes) -> dict[str, Any]:
        flow = tflow.tflow()
        req = flow.request
        req.scheme, req.method, req.host, req.port, req.path = "https", "POST", "api.openai.com", 443, \
            "/v1/chat/completions"
        req.headers["host"], req.headers["content-type"] = "api.openai.com", "application/json"
        flow.client_conn.sni = "api.openai.com"
        req.content = body
        self._current.clear()
        for name in HOOKS[:2]:
            await self.hook(name, flow)
        assert flow.response is None, flow.response.text if flow.response else ""
        flow.response = tutils.tresp(content=echo(flow.request.content or b""),
                                     headers=[(b"content-type", b"application/json")])
        for name in HOOKS[2:]:
            await self.hook(name, flow)
        call = call_of(flow)
        assert call is not None and call.recorded, "every call recorded"
        for stage, seconds in self._current.items():
            self.times[stage].append(seconds * 1e6)
        return json.loads(flow.response.content or b"{}")


async def _run(func: Callable[..., Awaitable[None] | None] | None, flow: http.HTTPFlow) -> None:
    if func is not None and (pending := func(flow)) is not None:
        await pending


def echo(body: bytes) -> bytes:
    """The mock provider's answer: "echo: " and the last user message."""
    last = [m for m in json.loads(body)["messages"] if m["role"] == "user"][-1]["content"]
    return json.dumps({"id": "x", "object": "chat.completion", "model": "gpt-4o-mini",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "echo: " + last},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 500, "completion_tokens": 500, "total_tokens": 1000}}).encode()


def gateway(tmp: Path) -> Gateway:
    policy = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    (tmp / "p.yaml").write_text(yaml.safe_dump({**policy, **GUARDS}))
    gw = Gateway(load_policy(tmp / "p.yaml"), tmp / "a.duckdb")
    gw.writer = NoWriter()  # type: ignore[assignment]
    mitmfix.install()
    warm(gw)
    settle_garbage_collector()
    return gw


async def single_calls(timed: Timed, n: int) -> dict[str, float]:
    rng = random.Random(2)
    for i in range(30):
        await timed.call(json.dumps(payload(rng, i)).encode())
    timed.times.clear()
    for i in range(n):
        await timed.call(json.dumps(payload(rng, 1000 + i)).encode())
    return {stage: statistics.median(values) for stage, values in timed.times.items()}


async def chats(timed: Timed, runs: int) -> tuple[dict[str, float], dict[str, float]]:
    """Per stage, the median of the first three and of the last three turns of 40-turn chats."""
    firsts: dict[str, list[float]] = defaultdict(list)
    lasts: dict[str, list[float]] = defaultdict(list)
    for run in range(runs):
        rng = random.Random(1000 + run)
        history: list[dict[str, str]] = []
        for turn in range(40):
            history.append({"role": "user", "content": prompt(rng, turn)[-600:]})
            timed.times.clear()
            answer = await timed.call(json.dumps({"model": "gpt-4o-mini", "messages": history}).encode())
            history.append({"role": "assistant", "content": answer["choices"][0]["message"]["content"]})
            if turn < 3 or turn >= 37:
                for stage, values in timed.times.items():
                    (firsts if turn < 3 else lasts)[stage].extend(values)
    return ({s: statistics.median(v) for s, v in firsts.items()}, {s: statistics.median(v) for s, v in lasts.items()})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--chats", type=int, default=8)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    timed = Timed(gateway(Path(tempfile.mkdtemp(prefix="douane-stages-"))))
    single = asyncio.run(single_calls(timed, args.calls))
    first, last = asyncio.run(chats(timed, args.chats))
    stages = [s for s in single if single[s] >= 1 or last.get(s, 0) >= 1]
    rows = ["| stage | one ~2 KB call, us | 40-turn chat: first 3 turns, us | last 3 turns, us | last / first |",
            "| --- | --- | --- | --- | --- |"]
    for s in stages:
        f, la = first.get(s, 0.0), last.get(s, 0.0)
        rows.append(f"| {s} | {single[s]:.0f} | {f:.0f} | {la:.0f} | {la / f:.2f}x |" if f else
                    f"| {s} | {single[s]:.0f} | {f:.0f} | {la:.0f} | - |")
    tf, tl = sum(first.values()), sum(last.values())
    rows.append(f"| **all of douane's stages** | **{sum(single.values()):.0f}** | **{tf:.0f}** | **{tl:.0f}** | "
                f"**{tl / tf:.2f}x** |")
    report = "\n".join(rows)
    print(report)
    if not args.no_write:
        head = (f"Run {time.strftime('%Y-%m-%d')}, in-process, every guard on (the policy of scripts/bench's "
                "every-guard row), audit rows counted not written; CPU time of the calling thread, median per "
                f"call over {args.calls} single calls with the bench's ~2 KB prompt, and over {args.chats} 40-turn "
                "chats (600-character turns, the answer echoed). What scripts/bench measures on top: mitmproxy's "
                "own work for douane's hooks, TLS, the audit writer's thread.")
        path = write_section("stages", f"## scripts/bench_stages (where a call's time goes)\n\n{head}\n\n{report}")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
