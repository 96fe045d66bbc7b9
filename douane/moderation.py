"""The moderation stage of an answer: harmful content and the policy's deny patterns, judged sentence by
sentence as the answer flows (douane.detect.moderation), each finding acted on by its category's
action: `block` (Blocked, rule `moderation.<category>` or `moderation.deny`), `redact` (the sentence
becomes `<MODERATED:<category>>`, its surrounding whitespace kept) or `monitor` (recorded).

On a stream, text that may still be redacted or blocked is held until its sentence is complete (at
most MAX_SENTENCE characters: a longer run is cut at a space and judged); under `monitor` nothing is
held. A whole text (a plain answer, a snapshot repeated at the end of a stream, a tool call's
arguments) is judged the same way, sentence for sentence. JSON (a tool call's arguments) cannot lose a
sentence and stay JSON: there `redact` blocks instead (a whole text is JSON when it parses; a stream's
lane when its first character opens an object or array).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import cast

import orjson

from douane.detect.moderation import CATEGORIES, DENY, Hit, Judge, ModerationDetector, may_end, sentence_end
from douane.policy.model import ModerationCategory, ModerationPolicy
from douane.rewrite import Blocked, Finding

_STRENGTH = {"monitor": 0, "redact": 1, "block": 2}


def rule(category: str) -> str:
    """The rule a finding of `category` is recorded and blocked under."""
    return f"moderation.{category}"


def placeholder(category: str) -> str:
    return f"<MODERATED:{category}>"


@dataclass
class Moderator:
    """One answer's moderation (one lane of a stream); see the module's docstring."""

    detector: ModerationDetector
    actions: dict[str, str]  # category (or DENY) -> block | redact | monitor; a category absent is not judged
    thresholds: dict[str, float]
    findings: list[Finding] = field(default_factory=list)
    held: str = ""  # text not yet sent on: its sentence is not complete
    blocked: str | None = None  # the rule this stage blocked under
    _pending: str = ""  # monitor: the incomplete sentence, already sent on, judged when complete
    _judge: Judge | None = None
    _json: bool | None = None  # the lane's text is JSON (decided on its first character)
    _found: dict[str, str] = field(default_factory=dict)  # category -> the action taken, for the audit

    @classmethod
    def for_policy(cls, detector: ModerationDetector, policy: ModerationPolicy, monitor: bool = False) -> Moderator:
        """The stage a `moderation:` section asks for; `monitor` (the policy's mode): record only."""
        actions: dict[str, str] = {}
        thresholds: dict[str, float] = {}
        for category in CATEGORIES:
            own = policy.categories.get(cast(ModerationCategory, category))
            action = (own.action if own is not None and own.action is not None else policy.action)
            if action == "off":
                continue
            actions[category] = action
            thresholds[category] = own.threshold if own is not None and own.threshold is not None else policy.threshold
        if policy.deny:
            actions[DENY] = policy.deny_action or policy.action
        if monitor:
            actions = dict.fromkeys(actions, "monitor")
        return cls(detector, actions, thresholds)

    @cached_property
    def rewrites(self) -> bool:
        """Whether this stage may change or stop the text (else it only records, holding nothing)."""
        return any(a != "monitor" for a in self.actions.values())

    def _fresh_judge(self) -> Judge:
        return self.detector.judge(self.thresholds)

    def _verdict(self, judge: Judge, sentence: str, json: bool) -> str:
        """The sentence as it goes on: itself, or its placeholder; Blocked when a block action fires."""
        hits = judge.sentence(sentence)
        if not hits:
            return sentence
        for hit in hits:
            self.findings.append(Finding("moderation", hit.category))
        # a redaction inside JSON (a tool call's arguments) would break it: it blocks instead
        effective = {h.category: "block" if json and self.actions[h.category] == "redact" else self.actions[h.category]
                     for h in hits}
        top = max(hits, key=lambda h: _STRENGTH[effective[h.category]])
        action = effective[top.category]
        for hit in hits:
            if effective[hit.category] != "block":
                self._found.setdefault(hit.category, effective[hit.category])
        if action == "block":
            self.blocked = rule(top.category)
            raise Blocked(self.blocked, _why(top) + (" (in a tool call's arguments, where it cannot be redacted)"
                                                     if self.actions[top.category] == "redact" else ""))
        if action == "redact":
            core = sentence.strip()
            at = sentence.index(core)
            return sentence[:at] + placeholder(top.category) + sentence[at + len(core):]
        return sentence

    def check(self, text: str) -> str:
        """A whole text at once (a plain answer, a snapshot, a tool call's arguments), judged afresh."""
        judge, json = self._fresh_judge(), _is_json(text)
        out, start = [], 0
        while start < len(text):
            end = sentence_end(text, start, final=True, max_len=self.detector.max_sentence)
            assert end is not None
            out.append(self._verdict(judge, text[start:end], json))
            start = end
        return "".join(out)

    def push(self, text: str) -> str:
        """Stream text in; out goes what is judged (monitor: everything, at once)."""
        if self._judge is None:
            self._judge = self._fresh_judge()
        if self._json is None and text.strip():
            self._json = text.lstrip()[:1] in ("{", "[")
        max_len = self.detector.max_sentence
        if not self.rewrites:
            known, self._pending = len(self._pending), self._pending + text
            if may_end(self._pending, known, max_len):
                self._pending = self._complete(self._pending, self._judge, keep=False)
            return text
        buf = self.held + text
        if not may_end(buf, len(self.held), max_len):
            self.held = buf
            return ""
        out: list[str] = []
        self.held = self._complete(buf, self._judge, keep=True, out=out)
        return "".join(out)

    def _complete(self, buf: str, judge: Judge, keep: bool, out: list[str] | None = None) -> str:
        """Judge every complete sentence of `buf` (into `out` when kept); returns the incomplete rest."""
        start, max_len = 0, self.detector.max_sentence
        while (end := sentence_end(buf, start, max_len=max_len)) is not None:
            judged = self._verdict(judge, buf[start:end], bool(self._json))
            if keep and out is not None:
                out.append(judged)
            start = end
            if not may_end(buf, start, max_len, start):  # the rest of a delta, in mid-sentence
                break
        return buf[start:]

    def drain(self) -> str:
        """The stream ends: what is left is one last sentence."""
        judge = self._judge or self._fresh_judge()
        rest, self._pending = self._pending, ""
        if rest.strip():
            self._verdict(judge, rest, bool(self._json))
        buf, self.held = self.held, ""
        return self._verdict(judge, buf, bool(self._json)) if buf else ""

    def notes(self) -> list[str]:
        """What the audit row's reason says of findings that did not block: `moderation.violence (redact)`."""
        return [f"{rule(c)} ({a})" for c, a in sorted(self._found.items())]


def _is_json(text: str) -> bool:
    """A whole text that is a JSON object or array (a tool call's arguments), not prose that starts
    with a bracket ("[1] See ...")."""
    if text.lstrip()[:1] not in ("{", "["):
        return False
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _why(hit: Hit) -> str:
    if hit.category == DENY:
        return f"the answer matches the policy's moderation.deny pattern #{(hit.pattern or 0) + 1}"
    return f"the answer contains {hit.category.replace('_', '-')} content (score {hit.score:.2f})"
