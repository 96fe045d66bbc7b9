"""MCP over streamable HTTP: the tools an agent calls on MCP servers, governed like a model's tool calls.

An MCP client POSTs JSON-RPC messages to its server's endpoint and gets a JSON-RPC answer back, as
JSON or as server-sent events (and may hold a GET stream open for the server's own messages). For
the servers the policy names (`mcp.servers`), douane intercepts that traffic and:
- judges each `tools/call` by the caller's `tools:` rules (the same judge as the model's calls): a
  denied call is not forwarded; the client gets a JSON-RPC error naming the rule;
- filters each `tools/list` answer: tools the rules deny are taken out, so the agent never offers them;
- scans each `tools/call` result for prompt injection under `injection.tool_result_threshold`: a
  result over it is replaced by a JSON-RPC error naming the tool;
- records each exchange as a `requests` row (provider `mcp:<server>`, endpoint the JSON-RPC
  method), its tool calls, results and listed tools in `tool_calls`; texts kept in the audit are
  PII-redacted (the answer goes to the agent, not through a provider's prompt guard).

Pure logic: addons/mcp.py glues it to flows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from douane import jsonio
from douane.call import Call, ToolUse
from douane.detect.pii import redact
from douane.detect.tools import ALLOWED, BLOCKED, MONITORED, STRIPPED
from douane.policy import Policy
from douane.providers import ProviderSpec, ProviderTable
from douane.providers.sse import SSEEvent
from douane.toolguard import CALL, DEFINITION, RESULT, judge_for, judge_one

if TYPE_CHECKING:
    from douane.gateway import Gateway

BLOCKED_CODE = -32001  # JSON-RPC's range for server errors: douane refused the call or its result
MAX_AUDIT_TEXT = 16_384


@dataclass(frozen=True)
class McpServer:
    name: str
    hosts: tuple[str, ...]
    upstream: str | None

    @property
    def spec(self) -> ProviderSpec:
        """The row's provider: `mcp:<name>` (the format is unused: MCP answers in JSON-RPC)."""
        return ProviderSpec(f"mcp:{self.name}", "openai", self.hosts, self.upstream)


class McpServers:
    """The policy's MCP servers, by the host a connection goes to (never the Host header): the
    providers' own host table, over specs standing for the servers."""

    def __init__(self, policy: Policy):
        self.servers = [McpServer(name, tuple(cfg.hosts), cfg.upstream)
                        for name, cfg in (policy.mcp.servers if policy.mcp else {}).items()]
        self._by_name = {s.spec.name: s for s in self.servers}
        self._table = ProviderTable([s.spec for s in self.servers])

    def match(self, host: str, port: int) -> McpServer | None:
        spec = self._table.match(host, port)
        return self._by_name[spec.name] if spec is not None else None

    def allow_hosts(self) -> list[str]:
        """Regexes for mitmproxy's allow_hosts: these hosts are intercepted, like providers'."""
        return self._table.allow_hosts()


def _key(message_id: Any) -> str:
    return json.dumps(message_id)


def jsonrpc_error(message_id: Any, message: str, rule: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": message_id,
            "error": {"code": BLOCKED_CODE, "message": f"douane blocked this: {message} [rule: {rule}]",
                      "data": {"rule": rule}}}


def _texts(value: Any) -> list[str]:
    """Every string of a tool result (content blocks' texts, structured content)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() if k not in ("type", "mimeType", "uri") for t in _texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


@dataclass
class McpExchange:
    """One HTTP exchange with an MCP server: the messages the client posted, judged; the answers,
    filtered and scanned. `asked` remembers each request's method and tool by its JSON-RPC id."""

    gw: Gateway
    call: Call
    server: McpServer
    asked: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def audit_text(self, text: str) -> str:
        """A text as the audit keeps it: PII redacted, at most MAX_AUDIT_TEXT characters."""
        text = text[:MAX_AUDIT_TEXT]
        found = self.gw.guards(self.call).pii_detector.scan(text)
        return redact(text, found) if found else text

    # -- what the client sends --------------------------------------------------------------------

    def request(self, body: bytes) -> bytes | None:
        """Judge the posted messages; the JSON-RPC answer to give instead of forwarding, or None."""
        try:
            parsed = jsonio.loads(body)
        except ValueError:
            return self._refuse_all(None, "the body is not JSON, so douane cannot inspect it", "unreadable_body")
        messages = parsed if isinstance(parsed, list) else [parsed]
        if not messages or not all(isinstance(m, dict) for m in messages):
            return self._refuse_all(None, "the body is not a JSON-RPC message or a list of them", "unreadable_body")
        methods = [m["method"] for m in messages if isinstance(m.get("method"), str)]
        self.call.endpoint = ",".join(dict.fromkeys(methods)) or "response"
        self.call.model_requested = self.call.model = None
        if self.gw.policy.audit.bodies == "redacted":
            self.call.request_body = self.audit_text(body.decode("utf-8", "replace"))
        refused: dict[str, tuple[str, str]] = {}
        for message in messages:
            method, tool = message.get("method"), None
            if method == "tools/call":
                tool, why = self._judge_call(message.get("params"))
                if why is not None and "id" in message:
                    refused[_key(message["id"])] = why
            if "id" in message and isinstance(method, str):
                self.asked[_key(message["id"])] = (method, tool)
        if not refused:
            return None
        batch = ("another message of this batch was refused, so none was forwarded", "batch")
        answers = [jsonrpc_error(m["id"], *refused.get(_key(m["id"]), batch)) for m in messages
                   if "id" in m and isinstance(m.get("method"), str)]
        rule = next(iter(refused.values()))[1]
        self._blocked(rule)
        return jsonio.dumps(answers if isinstance(parsed, list) else answers[0])

    def _judge_call(self, params: Any) -> tuple[str | None, tuple[str, str] | None]:
        """(the tool, (why, rule) when refused)."""
        params = params if isinstance(params, dict) else {}
        name = params.get("name") if isinstance(params.get("name"), str) else None
        arguments = params.get("arguments") if isinstance(params.get("arguments"), dict) else {}
        judge = judge_for(self.gw.policy, self.call.team, self.call.client)
        verdict = judge_one(judge, self.gw.enforcing, name, arguments, 1, 1)
        self.call.tool_calls.append(ToolUse(CALL, name, verdict.decision, verdict.rule,
                                            self.audit_text(jsonio.dumps(arguments).decode())))
        if verdict.decision == MONITORED:
            self.call.note(f"{verdict.rule} (monitor): {verdict.message}")
        if verdict.decision != BLOCKED:
            return name, None
        return name, (f"MCP server {self.server.name}: {verdict.message}", verdict.rule or "tools")

    def _refuse_all(self, message_id: Any, why: str, rule: str) -> bytes:
        self.call.endpoint = self.call.endpoint or "unreadable"
        self._blocked(rule)
        return jsonio.dumps(jsonrpc_error(message_id, why, rule))

    def _blocked(self, rule: str) -> None:
        self.call.decision = "blocked"
        if rule in self.call.reasons:
            self.call.reasons.remove(rule)
        self.call.reasons.insert(0, rule)

    # -- what the server answers ------------------------------------------------------------------

    def answer_json(self, body: bytes) -> bytes | None:
        """A JSON answer, filtered and scanned; None when it goes out as it came."""
        try:
            parsed = jsonio.loads(body)
        except ValueError:  # what cannot be read cannot be judged: it does not go out
            if not body.strip():
                return None
            self._blocked("unreadable_answer")
            return jsonio.dumps(jsonrpc_error(None, "the MCP server's answer is not JSON, so douane cannot inspect "
                                                    "it", "unreadable_answer"))
        messages = parsed if isinstance(parsed, list) else [parsed]
        changed = False
        for i, message in enumerate(messages):
            new = self.answer(message) if isinstance(message, dict) else None
            if new is not None:
                messages[i] = new
                changed = True
        self.call.response_body = self.audit_text(body.decode("utf-8", "replace"))
        if not changed:
            return None
        return jsonio.dumps(messages if isinstance(parsed, list) else messages[0])

    def answer_event(self, event: SSEEvent) -> bytes:
        """One server-sent event of an answer, filtered and scanned; as it came when nothing changed."""
        if event.data is None:
            return event.raw
        try:
            message = jsonio.loads(event.data)
        except ValueError:
            self._blocked("unreadable_answer")
            return event.with_data(json.dumps(jsonrpc_error(None, "an event of the MCP server's answer is not JSON",
                                                     "unreadable_answer")))
        new = self.answer(message) if isinstance(message, dict) else None
        kept = self.call.response_body or ""
        self.call.response_body = (kept + "\n" if kept else "") + self.audit_text(event.data)
        return event.raw if new is None else event.with_data(json.dumps(new))

    def answer(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """A message of the server's: the answer to one of the client's requests is filtered
        (tools/list) or scanned (tools/call); a replacement, or None to send it as it came."""
        asked = self.asked.get(_key(message.get("id"))) if "id" in message else None
        result = message.get("result")
        if asked is None or not isinstance(result, dict):
            return None
        method, tool = asked
        if method == "tools/list" and isinstance(result.get("tools"), list):
            return self._listed(message, result)
        if method == "tools/call":
            return self._result(message, result, tool)
        return None

    def _listed(self, message: dict[str, Any], result: dict[str, Any]) -> dict[str, Any] | None:
        judge = judge_for(self.gw.policy, self.call.team, self.call.client)
        kept = []
        for tool in result["tools"]:
            name = tool.get("name") if isinstance(tool, dict) and isinstance(tool.get("name"), str) else None
            verdict = judge.name(name) if judge is not None else None
            strip = verdict is not None and verdict.blocked and self.gw.enforcing
            decision = STRIPPED if strip else MONITORED if verdict is not None and verdict.decision != ALLOWED \
                else ALLOWED
            self.call.tool_calls.append(ToolUse(DEFINITION, name, decision, verdict.rule if verdict else None))
            if not strip:
                kept.append(tool)
        if len(kept) == len(result["tools"]):
            return None
        gone = sorted(u.tool or "(unnamed)" for u in self.call.tool_calls if u.decision == STRIPPED)
        self.call.note(f"tools.definitions: stripped {', '.join(gone)} from {self.server.name}'s tools/list")
        return {**message, "result": {**result, "tools": kept}}

    def _result(self, message: dict[str, Any], result: dict[str, Any], tool: str | None) -> dict[str, Any] | None:
        texts = _texts(result.get("content")) + _texts(result.get("structuredContent"))
        use = ToolUse(RESULT, tool, ALLOWED, None, self.audit_text("\n".join(texts)))
        self.call.tool_calls.append(use)
        guards = self.gw.guards(self.call)
        injection, detector = guards.injection, guards.injection_detector
        if injection is None or detector is None or not texts:
            return None
        verdict = max((detector.score(t) for t in texts), key=lambda v: v.score)
        threshold = injection.threshold if injection.tool_result_threshold is None else injection.tool_result_threshold
        if self.call.injection_score is None or verdict.score > self.call.injection_score:
            self.call.injection_score, self.call.injection_rule = verdict.score, verdict.rule
        if verdict.score < threshold:
            return None
        what = (f"the result of tool {tool or '(unnamed)'} from MCP server {self.server.name} looks like prompt "
                f"injection ({', '.join(verdict.rules)}; score {verdict.score:.2f} >= {threshold})")
        use.rule = "injection.tool_result"
        if injection.action == "monitor" or not self.gw.enforcing:
            use.decision = MONITORED
            self.call.note(f"injection.tool_result (monitor): {what}")
            return None
        use.decision = BLOCKED
        self._blocked("injection.tool_result")
        return jsonrpc_error(message.get("id"), what, "injection.tool_result")
