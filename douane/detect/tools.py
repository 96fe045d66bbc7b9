"""The tool judge: a tool call's name and arguments against the policy's tool rules.

It knows no wire format: a name, the arguments as an object (or the raw text when they are not a
JSON object), and counts in, a verdict out. douane.toolguard reads the calls out of requests and
answers and applies the verdicts.

Names are matched case-insensitively against globs. An argument rule picks values out of the
arguments (an argument's name found at any depth, a `$.path` from the top, or `*` for every value)
and judges each one: `deny` (a regex found anywhere denies), `allow` (a regex each value must match
whole), `hosts` (every URL in the value must be on one of these hosts; a value of a named argument
without a scheme is read as a host, as tools that take bare domains do). Arguments that cannot be
read as an object are judged as one text by `deny` rules, and refused by any `allow` or `hosts`
rule that applies: what cannot be checked is not let through.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from douane.policy.model import ToolArgumentRule, ToolsPolicy

ALLOWED, BLOCKED, MONITORED, STRIPPED = "allowed", "blocked", "monitored", "stripped"

_STEP = re.compile(r"\.([A-Za-z_][\w-]*|\*)|\[(\d+|\*)\]|\[(?:'([^']*)'|\"([^\"]*)\")\]")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]+")
_ANY = "*"


@dataclass(frozen=True, slots=True)
class ToolVerdict:
    decision: str  # allowed | blocked | monitored (a rule matched, its action is monitor)
    rule: str | None = None  # e.g. tools.deny, tools.arguments.no-shell-pipes
    message: str = ""

    @property
    def blocked(self) -> bool:
        return self.decision == BLOCKED


OK = ToolVerdict(ALLOWED)

Step = str | int  # a key, an index, or "*" (every key or element)


def parse_path(path: str) -> tuple[Step, ...] | str:
    """A rule's `argument`: `*`, a name (returned as is: found at any depth), or `$.a.b[0].c` / `$.files[*]`
    / `$['odd key']` (the steps). ValueError says how to write it."""
    if path == _ANY:
        return _ANY
    if not path.startswith("$"):
        if not path or any(c in path for c in ".[]$*"):
            raise ValueError(f"{path!r}: name one argument (command), give a path from the top ($.options.url, "
                             "$.files[*].path), or * for every value")
        return path
    steps: list[Step] = []
    at = 1
    while at < len(path):
        m = _STEP.match(path, at)
        if m is None:
            raise ValueError(f"{path!r}: cannot read the path at {path[at:]!r}; write $.name, $.list[0], $.list[*] "
                             "or $['odd key']")
        name, index, q1, q2 = m.groups()
        steps.append(int(index) if index is not None and index != "*" else index or name or q1 or q2 or "")
        at = m.end()
    if not steps:
        raise ValueError(f"{path!r}: a path names at least one step, e.g. $.url")
    return tuple(steps)


def _leaves(value: Any) -> Iterator[str]:
    """Every scalar under a value, as text."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    elif value is not None:
        yield json.dumps(value)


def _named(value: Any, name: str) -> Iterator[Any]:
    """Every value under a key called `name`, at any depth."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == name:
                yield v
            yield from _named(v, name)
    elif isinstance(value, list):
        for v in value:
            yield from _named(v, name)


def _walk(value: Any, steps: tuple[Step, ...]) -> Iterator[Any]:
    if not steps:
        yield value
        return
    step, rest = steps[0], steps[1:]
    if step == _ANY:
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
        for child in children:
            yield from _walk(child, rest)
    elif isinstance(step, int):
        if isinstance(value, list) and -len(value) <= step < len(value):
            yield from _walk(value[step], rest)
    elif isinstance(value, dict) and step in value:
        yield from _walk(value[step], rest)


def select(arguments: Any, path: tuple[Step, ...] | str) -> list[str]:
    """The values a rule's argument picks out of the arguments, as texts."""
    if path == _ANY:
        return list(_leaves(arguments))
    found = _named(arguments, path) if isinstance(path, str) else _walk(arguments, path)
    return [leaf for value in found for leaf in _leaves(value)]


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern.lower()))


def matches(name: str, globs: list[str]) -> bool:
    low = name.lower()
    return any(_glob(g).match(low) for g in globs)


def _host_of(value: str, bare_is_host: bool) -> str | None:
    """The host a URL names (after the last '@', backslashes read as slashes as browsers do); a value
    with no scheme is a host when `bare_is_host`. None when there is none to read."""
    text = value.strip().replace("\\", "/")
    if "://" not in text:
        if not bare_is_host or not text:
            return None
        text = "http://" + text
    try:
        host = urlsplit(text).hostname
    except ValueError:
        return None
    return host.rstrip(".") if host else None


@dataclass(frozen=True, slots=True)
class _Rule:
    id: str
    spec: ToolArgumentRule
    path: tuple[Step, ...] | str
    deny: re.Pattern[str] | None
    allow: re.Pattern[str] | None

    @classmethod
    def of(cls, position: int, spec: ToolArgumentRule) -> _Rule:
        return cls(f"tools.arguments.{spec.name or position}", spec, parse_path(spec.argument),
                   re.compile(spec.deny) if spec.deny is not None else None,
                   re.compile(spec.allow) if spec.allow is not None else None)

    def judge(self, arguments: Any) -> str | None:
        """Why the arguments break the rule; None when they do not."""
        if not isinstance(arguments, dict):  # free text, or not JSON: one text
            text = arguments if isinstance(arguments, str) else json.dumps(arguments)
            if self.path == _ANY:
                return self._values([text])
            if self.deny is not None and self.deny.search(text):
                return f"its arguments match {self.spec.deny!r}"
            if self.allow is not None or self.spec.hosts is not None:
                return "its arguments are not a JSON object, so this rule cannot check them"
            return None
        return self._values(select(arguments, self.path))

    def _values(self, values: list[str]) -> str | None:
        for value in values:
            if self.deny is not None and self.deny.search(value):
                return f"{self._where} {_short(value)} matches {self.spec.deny!r}"
            if self.allow is not None and not self.allow.fullmatch(value):
                return f"{self._where} {_short(value)} does not match {self.spec.allow!r}"
            if self.spec.hosts is not None and (why := self._hosts(value)) is not None:
                return why
        return None

    def _hosts(self, value: str) -> str | None:
        named = self.path != _ANY
        urls = _URL.findall(value) if "://" in value or not named else [value]
        for url in urls:
            host = _host_of(url, named)
            if host is None:
                return f"{self._where} {_short(value)} names no host douane can check"
            if not matches(host, self.spec.hosts or []):
                return f"{self._where} names host {host}, which is not among {', '.join(self.spec.hosts or [])}"
        return None

    @property
    def _where(self) -> str:
        return "a value" if self.path == _ANY else f"argument {self.spec.argument}"


def _short(value: str, limit: int = 80) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


class ToolJudge:
    """One scope's tool rules, compiled once. `scope` names where they come from (tools,
    teams.<t>.tools, clients.<c>.tools), for messages."""

    def __init__(self, settings: ToolsPolicy, scope: str = "tools"):
        self.settings = settings
        self.scope = scope
        self.rules = [_Rule.of(i, r) for i, r in enumerate(settings.arguments)]

    def _verdict(self, rule: str, message: str, action: str) -> ToolVerdict:
        return ToolVerdict(BLOCKED if action == "block" else MONITORED, rule, message)

    def name(self, name: str | None) -> ToolVerdict:
        """The allow and deny lists. A call that names no tool cannot be on an allow list."""
        s = self.settings
        shown = name if name is not None else "(unnamed)"
        if name is not None and matches(name, s.deny):
            return self._verdict("tools.deny", f"tool {shown} is denied by {self.scope}.deny "
                                 f"({', '.join(s.deny)})", s.action)
        if s.allow is not None and (name is None or not matches(name, s.allow)):
            return self._verdict("tools.allow", f"tool {shown} is not on {self.scope}.allow "
                                 f"({', '.join(s.allow) or 'nothing'})", s.action)
        return OK

    def call(self, name: str | None, arguments: Any) -> ToolVerdict:
        """A call: its name, then every argument rule that applies to it; the first that blocks wins
        (else the first that monitors)."""
        verdict = self.name(name)
        if verdict.blocked:
            return verdict
        for rule in self.rules:
            if name is not None and not matches(name, rule.spec.tools) or name is None and rule.spec.tools != ["*"]:
                continue
            why = rule.judge(arguments)
            if why is None:
                continue
            found = self._verdict(rule.id, f"the call of tool {name} breaks {self.scope}.arguments "
                                  f"({rule.id}): {why}", rule.spec.action)
            if found.blocked:
                return found
            verdict = verdict if verdict.decision != ALLOWED else found
        return verdict

    def count(self, in_answer: int, in_conversation: int) -> ToolVerdict:
        """The caps, with this call counted: calls in this answer, and in the conversation so far."""
        s = self.settings
        for cap, count, what in ((s.max_calls_per_request, in_answer, "the answer"),
                                 (s.max_calls_per_conversation, in_conversation, "the conversation")):
            if cap is not None and count > cap:
                key = "max_calls_per_request" if what == "the answer" else "max_calls_per_conversation"
                return self._verdict(f"tools.{key}", f"{what} makes more than {cap} tool call(s) "
                                     f"({self.scope}.{key})", s.action)
        return OK
