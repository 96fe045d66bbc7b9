"""`douane policy test`: a policy's test cases, judged offline by the proxy's own addon chain.

Each case is one call (or the same call N times: `repeat`) put through `addons.build(gw)`, the very
chain `douane run` uses, on mitmproxy's in-memory flows: nothing listens, nothing is sent. Where the
proxy would forward the request, the case's canned answer (default "ok") comes back in the
provider's format, plain or streamed as the request asked, and goes through the answer stages.
What the case expects is checked against the audit record the chain wrote and the bytes that would
have left (`forwarded`) or come back (`answer`).

Limits and budgets start empty for each case, under a clock fixed at CLOCK_START. Provider keys
are placeholders: a test never reads a real key. Not exercised: fallbacks (a call handed to the
relay is answered by its first attempt), WebSockets, MCP servers.

A test file is YAML: `cases:`, a list of mappings with the keys of CASE_KEYS; `expect:` takes the
keys of EXPECT_KEYS.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from douane.policy.model import Policy

CLOCK_START = "2030-01-01T00:00:10Z"
CASE_KEYS = {"name", "client", "provider", "path", "model", "prompt", "stream", "request", "answer", "repeat",
             "expect"}
EXPECT_KEYS = {"decision", "status", "rule", "model", "provider", "redacted", "forwarded_contains",
               "forwarded_lacks", "answer_contains", "answer_lacks", "output_findings", "injection_rule"}
HOOKS_BEFORE_UPSTREAM = ("requestheaders", "request")
DEFAULT_PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


class CaseFileError(Exception):
    """A test file douane cannot read: `file: where: what is wrong`."""


@dataclass
class Case:
    name: str
    where: str  # file:cases[i], for messages
    client: str | None
    provider: str
    path: str | None
    body: dict[str, Any]
    stream: bool
    answer: str
    repeat: int
    expect: dict[str, Any]
    usage: tuple[int | None, int | None] | None = None  # (input, output) tokens the answer reports


@dataclass
class Result:
    case: Case
    failures: list[str] = field(default_factory=list)
    got: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures


# -- reading test files ---------------------------------------------------------------------------


def load_cases(path: str | Path) -> list[Case]:
    """The cases of one test file; CaseFileError naming the file and case when one is malformed."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CaseFileError(f"{path}: cannot read it: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list) or not doc["cases"]:
        raise CaseFileError(f"{path}: expected a mapping with `cases:`, a non-empty list of test cases")
    return [_case(path, i, raw) for i, raw in enumerate(doc["cases"])]


def _case(path: Path, i: int, raw: Any) -> Case:
    where = f"{path}: cases[{i}]"
    if not isinstance(raw, dict):
        raise CaseFileError(f"{where}: expected a mapping, got {type(raw).__name__}")

    def fail(what: str) -> CaseFileError:
        return CaseFileError(f"{where} ({raw.get('name', 'unnamed')}): {what}")

    unknown = set(raw) - CASE_KEYS
    if unknown:
        raise fail(f"unknown key(s) {', '.join(sorted(unknown))}; a case takes {', '.join(sorted(CASE_KEYS))}")
    expect = raw.get("expect")
    if not isinstance(expect, dict) or not expect:
        raise fail("`expect:` is missing: a mapping of what the call must come to")
    if set(expect) - EXPECT_KEYS:
        raise fail(f"unknown expect key(s) {', '.join(sorted(set(expect) - EXPECT_KEYS))}; "
                   f"expect takes {', '.join(sorted(EXPECT_KEYS))}")
    provider = str(raw.get("provider", "openai"))
    stream = bool(raw.get("stream", False))
    if "request" in raw:
        if not isinstance(raw["request"], dict) or "prompt" in raw:
            raise fail("`request:` is the JSON body as a mapping, given instead of `prompt:`")
        body = raw["request"]
    elif isinstance(raw.get("prompt"), str):
        body = prompt_body(provider, str(raw.get("model", "gpt-4o-mini")), raw["prompt"], stream)
    else:
        raise fail("give the call's body: `request:` (the JSON body) or `prompt:` (a user message) with `model:`")
    repeat = raw.get("repeat", 1)
    if not isinstance(repeat, int) or not 1 <= repeat <= 10_000:
        raise fail("`repeat:` is a whole number of calls, 1 to 10000")
    answer = raw.get("answer", "ok")
    if not isinstance(answer, str):
        raise fail("`answer:` is the text the provider answers")
    return Case(name=str(raw.get("name", f"cases[{i}]")), where=where, client=raw.get("client"), provider=provider,
                path=raw.get("path"), body=body, stream=stream or bool(body.get("stream")), answer=answer,
                repeat=repeat, expect=expect)


def prompt_body(provider: str, model: str, prompt: str, stream: bool) -> dict[str, Any]:
    """A minimal chat body carrying one user message, in the shape of the provider's format."""
    message = {"role": "user", "content": prompt}
    if provider == "gemini":
        return {"model": model, "contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    if provider == "anthropic":
        return {"model": model, "max_tokens": 256, "messages": [message], **({"stream": True} if stream else {})}
    return {"model": model, "messages": [message], **({"stream": True} if stream else {})}


# -- running them ---------------------------------------------------------------------------------


class Collector:
    """The test gateway's audit writer: the records, in memory."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def submit(self, record: Any) -> None:
        self.records.append(record)


def placeholder_keys(specs: list[Any]) -> dict[str, str]:
    """A stand-in for each central key: a test never reads the real ones."""
    return {s.name: "douane-policy-test-key" for s in specs if s.api_key_env or s.api_key_file}


class Harness:
    """Runs cases against one policy; detectors are built once and shared by every case."""

    def __init__(self, policy: Policy):
        from douane.guard_settings import Detectors

        self.policy = policy
        self.detectors = Detectors()

    def run(self, cases: list[Case]) -> list[Result]:
        return asyncio.run(self._run_all(cases))

    async def _run_all(self, cases: list[Case]) -> list[Result]:
        return [await self.run_case(case) for case in cases]

    async def run_case(self, case: Case) -> Result:
        from addons import build
        from douane.clock import FixedClock
        from douane.gateway import ConfigError, Gateway
        from douane.meter.state import MemoryState

        result = Result(case)
        try:
            gw = Gateway(self.policy, None, writer=Collector(), clock=FixedClock(CLOCK_START),  # type: ignore[arg-type]
                         state=MemoryState(), keys=placeholder_keys, detectors=self.detectors)
        except ConfigError as e:
            result.failures.append(f"the policy cannot be served: {e}")
            return result
        chain = build(gw)
        try:
            who = identity_of(gw, case.client)
            for _ in range(case.repeat):
                result.got = await one_call(gw, chain, case, who)
        except CaseFileError as e:
            result.failures.append(str(e))
            return result
        result.failures = compare(case.expect, result.got)
        return result


def identity_of(gw: Any, client: str | None) -> Any:
    """The caller a case names, as the policy knows it (a test has the name, never the key)."""
    from douane.identity import ANONYMOUS, Identity

    clients = gw.policy.clients
    if clients is None:
        if client not in (None, ANONYMOUS):
            raise CaseFileError(f"client {client!r}: this policy names no clients; every caller is anonymous")
        return Identity(ANONYMOUS, None)
    named = {c.name: c for c in clients}
    if client is None or client not in named:
        raise CaseFileError(f"client {client!r}: not one of the policy's clients ({', '.join(sorted(named))}); "
                            "name one with `client:`")
    return Identity(client, named[client].team)


async def _hook(chain: list[object], name: str, flow: Any) -> None:
    for entry in chain:
        func = getattr(entry, name, None)
        if func is not None:
            out = func(flow)
            if inspect.isawaitable(out):
                await out


def connections() -> tuple[Any, Any]:
    """An in-memory client and server connection (a keep-alive pair: calls may share one)."""
    from mitmproxy.test import tflow

    return tflow.tclient_conn(), tflow.tserver_conn()


async def one_call(gw: Any, chain: list[object], case: Case, who: Any,
                   conns: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """One call through the chain, answered offline; what the audit recorded and what crossed the wire."""
    from mitmproxy import http

    from addons.identity import IdentityAddon
    from addons.router import PLAN_KEY
    from douane.call import METADATA_KEY

    spec = gw.providers.by_name(case.provider) if case.provider in {s.name for s in gw.providers.specs} else None
    if spec is None:
        raise CaseFileError(f"{case.where}: provider {case.provider!r} is not one of this policy's providers")
    host = spec.hosts[0]
    path = case.path or default_path(spec.format, case.body, case.stream)
    flow = http.HTTPFlow(*(conns or connections()))
    flow.client_conn.sni = host
    flow.request = http.Request.make("POST", f"https://{host}{path}", json.dumps(case.body).encode(),
                                     http.Headers(content_type="application/json", authorization="Bearer sk-client"))
    for entry in chain:
        for stage in getattr(entry, "stages", []):
            if isinstance(stage, IdentityAddon):
                stage.known_as(flow.client_conn, who)
    for hook in HOOKS_BEFORE_UPSTREAM:
        await _hook(chain, hook, flow)
    forwarded = None
    if flow.response is None:  # it would leave: the provider answers
        forwarded = flow.request.get_text(strict=False)
        plan = flow.metadata.get(PLAN_KEY)
        if plan is not None and plan.attempts:  # the relay: its first attempt answers, in the client's format
            plan.served = plan.attempts[0]
            plan.tried.append(plan.served.label)
        call = flow.metadata.get(METADATA_KEY)
        model = (call.model if call is not None else None) or "unknown"
        flow.response = canned_answer(spec.format, model, case.answer, case.stream, case.usage)
        await _hook(chain, "responseheaders", flow)
        streamed = _stream_through_tap(flow)  # a plain answer is judged in the `response` hook, below
    else:
        streamed = None
    await _hook(chain, "response", flow)
    answer = streamed if streamed is not None else flow.response.get_text(strict=False) if flow.response else None
    records = gw.writer.records
    if not records:
        raise CaseFileError(f"{case.where}: the call left no audit record (it was not an LLM call douane models)")
    row = records[-1]
    return {"id": row.id, "decision": row.decision, "status": row.status, "cost_usd": row.cost_usd,
            "reason": row.reason, "model": row.model,
            "provider": row.served_by or row.provider, "pii_entities": list(row.pii_entities),
            "output_findings": list(row.output_findings), "injection_rule": row.injection_rule,
            "forwarded": forwarded, "answer": answer}


def _stream_through_tap(flow: Any) -> str | None:
    """A streamed answer as the client gets it, through the stream tap; None when it is not streamed."""
    resp = flow.response
    if not callable(resp.stream):
        return None
    pieces = list(resp.stream(resp.content or b"")) + list(resp.stream(b""))
    return b"".join(pieces).decode("utf-8", "replace")


def default_path(fmt: str, body: dict[str, Any], stream: bool) -> str:
    if fmt == "gemini":
        model = body.get("model", "gemini-2.0-flash")
        return f"/v1beta/models/{model}:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")
    return DEFAULT_PATHS.get(fmt, "/v1/chat/completions")


def canned_answer(fmt: str, model: str, text: str, stream: bool,
                  usage: tuple[int | None, int | None] | None = None) -> Any:
    """The provider's answer carrying `text` and `usage` (input, output tokens), plain or as its SSE stream."""
    from mitmproxy import http

    from douane import translate
    from douane.providers import CanonicalResponse, StreamEvent, TextPart, Usage

    tokens_in, tokens_out = usage or (None, None)
    reported = Usage(input_tokens=10 if tokens_in is None else tokens_in,
                     output_tokens=max(1, len(text.split())) if tokens_out is None else tokens_out)
    if stream:
        writer = translate.StreamWriter(fmt, model)
        body = writer.write(StreamEvent(parts=[TextPart({"text": text}, "text")])) \
            + writer.write(StreamEvent(usage=reported, finish="stop")) + writer.close()
        return http.Response.make(200, body, {"content-type": "text/event-stream"})
    reply = CanonicalResponse(model=model, parts=[TextPart({"text": text}, "text")], usage=reported,
                              finish="stop")
    return http.Response.make(200, json.dumps(translate.write_reply(fmt, reply, model)).encode(),
                              {"content-type": "application/json"})


# -- comparing ------------------------------------------------------------------------------------


def compare(expect: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Every expectation the call did not meet, said as `key: expected X, got Y`."""
    failures = []
    for key in ("decision", "status", "model", "provider", "injection_rule"):
        if key in expect and expect[key] != got[key]:
            failures.append(f"{key}: expected {expect[key]!r}, got {got[key]!r}")
    if "rule" in expect and not _names_rule(got["reason"], str(expect["rule"])):
        failures.append(f"rule: expected {expect['rule']!r} among the reasons, got {got['reason']!r}")
    for key, found in (("redacted", "pii_entities"), ("output_findings", "output_findings")):
        wanted = set(_list(expect.get(key)))
        if key in expect and not wanted <= set(got[found]) or (key in expect and not wanted and got[found]):
            failures.append(f"{key}: expected {sorted(wanted)}, got {sorted(got[found])}")
    for key, side, present in (("forwarded_contains", "forwarded", True), ("forwarded_lacks", "forwarded", False),
                               ("answer_contains", "answer", True), ("answer_lacks", "answer", False)):
        text = got[side] or ""
        for needle in _list(expect.get(key)):
            if (needle in text) != present:
                what = "nothing was forwarded" if side == "forwarded" and got[side] is None \
                    else f"{side}: {text[:200]!r}"
                failures.append(f"{key}: {needle!r} {'missing' if present else 'present'}; {what}")
    return failures


def _names_rule(reason: str | None, rule: str) -> bool:
    """Whether one of the row's reasons is the rule (`pii.block`, or `pii.block: EMAIL_ADDRESS x1`)."""
    return any(r == rule or r.startswith((rule + ":", rule + " ")) for r in (reason or "").split("; "))


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]
