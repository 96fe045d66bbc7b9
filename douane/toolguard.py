"""Tool calls governed where they pass, whatever the format: tools offered to the model (definitions),
calls resent in a request's history, results sent back, and calls the model asks for in an answer,
plain or streamed.

douane.detect.tools judges a name and its arguments; this reads the calls out of the canonical model,
applies the verdicts (a Block, a stripped definition, a Blocked stream) and records every call seen
on the Call (`Call.tool_calls`, the audit's `tool_calls` view).

Which rules apply: the policy's `tools:`, overridden key by key by the caller's team's `tools:`, then
by the client's own. No `tools:` anywhere: nothing is judged or held, calls are only recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from douane.call import Call, ToolUse
from douane.decision import Block
from douane.detect.tools import ALLOWED, BLOCKED, MONITORED, STRIPPED, ToolJudge, ToolVerdict
from douane.policy import Policy
from douane.policy.model import ToolsPolicy
from douane.providers import EVERY_CALL, StreamEvent, ToolCall, ToolDef
from douane.rewrite import Blocked

CALL, HISTORY, RESULT, DEFINITION = "call", "history", "result", "definition"

_JUDGES: dict[tuple[int, str | None, str | None], tuple[Policy, ToolJudge | None]] = {}


def judge_for(policy: Policy, team: str | None, client: str | None) -> ToolJudge | None:
    """The tool rules for a caller (compiled once per policy and caller); None when no scope sets any."""
    key = (id(policy), team, client)
    hit = _JUDGES.get(key)
    if hit is not None and hit[0] is policy:
        return hit[1]
    settings, scope = policy.tools, "tools"
    team_cfg = policy.teams.get(team) if team is not None else None
    client_cfg = next((c for c in policy.clients or [] if c.name == client), None) if client else None
    for override, where in ((team_cfg.tools if team_cfg else None, f"teams.{team}.tools"),
                            (client_cfg.tools if client_cfg else None, f"clients.{client}.tools")):
        if override is not None:
            settings = _overridden(settings, override)
            scope = where
    judge = ToolJudge(settings, scope) if settings is not None else None
    if len(_JUDGES) > 4096:  # policies reloaded many times, or many clients: start afresh
        _JUDGES.clear()
    _JUDGES[key] = (policy, judge)
    return judge


def _overridden(base: ToolsPolicy | None, override: ToolsPolicy) -> ToolsPolicy:
    if base is None:
        return override
    return base.model_copy(update={name: getattr(override, name) for name in override.model_fields_set})


def arguments_of(text: str) -> Any:
    """Arguments as the judge reads them: a JSON object, or the text itself when it is not one."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def _call_arguments(call: ToolCall) -> Any:
    value = None if call.container is None else call.container.get(call.key)
    return value if isinstance(value, dict) else arguments_of(call.arguments)


def hide(text: str, pseudonyms: dict[str, str]) -> str:
    """The user's values put back in an answer, replaced again by their placeholders (for the audit)."""
    for placeholder, value in pseudonyms.items():
        if value:
            text = text.replace(value, placeholder)
    return text


def _enforced(verdict: ToolVerdict, enforcing: bool) -> ToolVerdict:
    """In monitor mode a block is only recorded."""
    if verdict.blocked and not enforcing:
        return ToolVerdict(MONITORED, verdict.rule, verdict.message)
    return verdict


def _note(call: Call, verdict: ToolVerdict) -> None:
    if verdict.decision == MONITORED:
        call.note(f"{verdict.rule} (monitor): {verdict.message}")


def lead_with(call: Call, rule: str) -> None:
    """The rule that blocked first in the row's reason, before what earlier stages noted."""
    if rule in call.reasons:
        call.reasons.remove(rule)
    call.reasons.insert(0, rule)


# -- requests -----------------------------------------------------------------------------------------


def check_request(policy: Policy, call: Call) -> Block | None:
    """The request's tool definitions, the calls in its history and the results it sends back: every
    one recorded; a denied call in the history refuses the request, a denied definition is stripped
    (or refuses it, `definitions: block`)."""
    request = call.request
    if request is None or not (request.tools or any(m.tool_calls or m.tool_results for m in request.messages)):
        return None
    judge = judge_for(policy, call.team, call.client)
    block = _definitions(policy, call, judge)
    names: dict[str, str] = {}
    history = 0
    for message in request.messages:
        for tc in message.tool_calls:
            history += 1
            if tc.id and tc.name:
                names[tc.id] = tc.name
            verdict = OK_VERDICT if judge is None else _enforced(judge.call(tc.name, _call_arguments(tc)),
                                                                  policy.enforcing)
            if verdict.decision == ALLOWED and judge is not None:
                verdict = _enforced(judge.count(0, history), policy.enforcing)
            call.tool_calls.append(ToolUse(HISTORY, tc.name, verdict.decision, verdict.rule, source=tc))
            _note(call, verdict)
            if verdict.blocked and block is None:
                block = Block(403, verdict.rule or "tools", f"the conversation's history holds a tool call douane "
                              f"refuses: {verdict.message}; remove it from the history, or ask for the policy to "
                              "allow it")
        for result in message.tool_results:
            name = result.name or names.get(result.call_id or "")
            call.tool_calls.append(ToolUse(RESULT, name, source=result))
    return block


OK_VERDICT = ToolVerdict(ALLOWED)


def _definitions(policy: Policy, call: Call, judge: ToolJudge | None) -> Block | None:
    request = call.request
    assert request is not None
    block = None
    stripped: list[ToolDef] = []
    for tool in request.tools:
        name = tool.name or tool.kind
        verdict = OK_VERDICT if judge is None else _enforced(judge.name(name), policy.enforcing)
        decision = verdict.decision
        if verdict.blocked:
            action = judge.settings.definitions if judge is not None else "strip"
            if action == "monitor":
                decision = MONITORED
                call.note(f"{verdict.rule} (monitor): the request offers {name}: {verdict.message}")
            elif action == "strip":
                decision = STRIPPED
                stripped.append(tool)
            elif block is None:
                block = Block(403, verdict.rule or "tools", f"the request offers the model a tool douane refuses: "
                              f"{verdict.message}; take it out of the request's tools")
        else:
            _note(call, verdict)
        call.tool_calls.append(ToolUse(DEFINITION, name, decision, verdict.rule))
    if stripped and block is None:
        _strip(call, stripped)
    return block


def _strip(call: Call, tools: list[ToolDef]) -> None:
    """Take denied tools out of the request before it leaves, so that the model never sees them."""
    request = call.request
    assert request is not None
    touched = {id(t.container) for t in tools}  # the lists and objects something is taken out of
    for tool in tools:
        tool.remove()
        request.tools.remove(tool)
    body = request.body
    for key, choice_keys in (("tools", ("tool_choice", "toolConfig", "tool_config", "parallel_tool_calls")),
                             ("functions", ("function_call",))):
        value = body.get(key)
        entries = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
        for entry in entries:  # a Gemini tool whose declarations are all gone is gone too
            if isinstance(entry, dict):
                for k, v in list(entry.items()):
                    if isinstance(v, list) and id(v) in touched:
                        v[:] = [x for x in v if x is not None]
                        touched.add(id(entry))
                        if not v:
                            del entry[k]
        if isinstance(value, list) and id(value) in touched | {id(e) for e in entries}:
            value[:] = [v for v in value if v is not None and not (v == {} and id(v) in touched)]
        if value in ([], {}) and id(value) in touched:
            del body[key]
            for choice in choice_keys:
                body.pop(choice, None)
    # strings of keys taken out (a tool_choice naming a tool) are no longer there to scan
    call.other_parts = [p for p in call.other_parts if not isinstance(p.container, dict) or p.key in p.container]
    call.body_changed = True
    call.note(f"tools.definitions: stripped {', '.join(sorted({t.name or t.kind for t in tools}))}")


def history_calls(call: Call) -> int:
    return sum(1 for use in call.tool_calls if use.direction == HISTORY)


# -- answers ------------------------------------------------------------------------------------------


def check_answer(policy: Policy, call: Call, calls: list[ToolCall]) -> Block | None:
    """A plain answer's tool calls (as the client would get them), each judged and recorded; the first
    the policy refuses blocks the answer."""
    if not calls:
        return None
    judge = judge_for(policy, call.team, call.client)
    history = history_calls(call)
    block = None
    for n, tc in enumerate(calls, 1):
        verdict = judge_one(judge, policy.enforcing, tc.name, _call_arguments(tc), n, history + n)
        call.tool_calls.append(ToolUse(CALL, tc.name, verdict.decision, verdict.rule,
                                       hide(tc.arguments, call.pseudonyms)))
        _note(call, verdict)
        if verdict.blocked and block is None:
            block = answer_block(verdict)
    return block


def judge_one(judge: ToolJudge | None, enforcing: bool, name: str | None, arguments: Any, in_answer: int,
              in_conversation: int) -> ToolVerdict:
    if judge is None:
        return OK_VERDICT
    verdict = _enforced(judge.call(name, arguments), enforcing)
    if verdict.decision == ALLOWED:
        verdict = _enforced(judge.count(in_answer, in_conversation), enforcing)
    return verdict


def answer_block(verdict: ToolVerdict) -> Block:
    return Block(403, verdict.rule or "tools", f"the model asked for a tool call douane refuses: {verdict.message}",
                 always=True)


@dataclass
class _Pending:
    """A streamed tool call being gathered: its name, id and the argument fragments so far."""

    name: str | None = None
    id: str | None = None
    fragments: list[str] = field(default_factory=list)
    whole: bool = False  # it came in one piece (Gemini): complete as soon as seen


class ToolWatch:
    """The tool calls of one streamed answer, gathered fragment by fragment and judged when complete.

    The stream tap (douane.streaming.EventTap) holds the frames of a call from its first fragment
    until it is complete, asks `judge` about it, then sends them on unchanged, or ends the stream."""

    def __init__(self, policy: Policy, call: Call):
        self.judge = judge_for(policy, call.team, call.client)
        self.enforcing = policy.enforcing
        self.call = call
        self.history = history_calls(call)
        self.pending: dict[Any, _Pending] = {}
        self.seen = 0
        self._wholes = 0

    @property
    def holds(self) -> bool:
        """Whether calls are held until judged: only when rules apply; else they are only recorded."""
        return self.judge is not None

    def gather(self, fragments: list[ToolCall]) -> None:
        for fragment in fragments:
            key: Any = fragment.index
            if key is None:
                key = ("whole", self._wholes)
                self._wholes += 1
            pending = self.pending.setdefault(key, _Pending())
            pending.name = pending.name or fragment.name
            pending.id = pending.id or fragment.id
            pending.whole = fragment.index is None
            if fragment.container is not None:
                pending.fragments.append(fragment.arguments)

    def completed(self, info: StreamEvent | None) -> list[_Pending]:
        """The calls an event completes (None: the stream ended, all of them), taken out of `pending`."""
        every = info is None or EVERY_CALL in info.tool_calls_done or info.finish is not None or info.final
        done = set(info.tool_calls_done) if info is not None else set()
        keys = [k for k, p in self.pending.items() if every or p.whole or k in done]
        return [self.pending.pop(k) for k in keys]

    def decide(self, pending: _Pending, final: str, audited: str | None) -> ToolVerdict:
        """Judge a complete call (`final`: its arguments as the client would get them) and record it;
        Blocked when the answer must stop here."""
        self.seen += 1
        verdict = judge_one(self.judge, self.enforcing, pending.name, arguments_of(final), self.seen,
                            self.history + self.seen)
        self.call.tool_calls.append(ToolUse(CALL, pending.name, verdict.decision, verdict.rule, audited))
        _note(self.call, verdict)
        if verdict.decision == BLOCKED:
            raise Blocked(verdict.rule or "tools", f"the model asked for a tool call douane refuses: {verdict.message}")
        return verdict
