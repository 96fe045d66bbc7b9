"""Text rewriting that holds on streams: each stage sees text as it arrives, emits what is safe now,
and holds back a bounded tail that could still change (half a placeholder, half a secret).

Stages: OutputGuard (secrets and PII the provider produced: redact, block or record), Moderator
(douane.moderation: harmful content and deny patterns, sentence by sentence) and PseudonymRestorer
(the user's own values back in place of `<EMAIL_ADDRESS_1>` placeholders). The guards judge
(`check` a whole text, `findings`, `rewrites`); the restorer only restores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from douane.detect.pii import PiiDetector
from douane.detect.secrets import PRIVATE_KEY_END, SecretsDetector

if TYPE_CHECKING:
    from douane.moderation import Moderator


class Blocked(Exception):
    """The answer must not reach the client; the message names the rule."""

    def __init__(self, rule: str, message: str):
        self.rule = rule
        super().__init__(message)


# What every secret and PII value the guard knows needs somewhere: a digit, an '@', a ':' (URLs with
# credentials, some tokens) or a long unbroken token.
_MAYBE = re.compile(r"[\d@:]|[A-Za-z0-9_\-+/=.]{16,}")


# douane's own placeholders, numbered or not (`<EMAIL_ADDRESS_12>`, `<EMAIL_ADDRESS>`)
_OWN_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")


def without_placeholders(text: str) -> str:
    """The text with douane's placeholders blanked out, same length. A provider that echoes them
    writes long unbroken tokens, which would send the secret patterns over every window around them."""
    return _OWN_PLACEHOLDER.sub(lambda m: " " * len(m.group()), text) if "<" in text else text


class PseudonymRestorer:
    """`<EMAIL_ADDRESS_1>` -> the value it stands for; holds back at most one partial placeholder."""

    _PARTIAL = re.compile(r"<[A-Z_]*(?:_\d*)?$")
    # Any placeholder's shape; only those in the mapping are replaced. One pattern for every call,
    # where an alternation of this call's placeholders was a new regex to compile per call (~0.1 ms
    # for the eighty placeholders of a long chat).
    _PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")

    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping
        self.longest = max((len(k) for k in mapping), default=0)
        self.held = ""

    def _value(self, m: re.Match[str]) -> str:
        return self.mapping.get(m.group(), m.group())

    def restore(self, text: str) -> str:
        return self._PLACEHOLDER.sub(self._value, text) if self.mapping and "<" in text else text

    def push(self, text: str) -> str:
        buf = self.held + text
        tail = self._PARTIAL.search(buf, max(0, len(buf) - self.longest))
        if tail is not None and len(buf) - tail.start() < self.longest:
            self.held = buf[tail.start():]
            buf = buf[:tail.start()]
        else:
            self.held = ""
        return self.restore(buf)

    def drain(self) -> str:
        out, self.held = self.restore(self.held), ""
        return out


@dataclass
class Finding:
    kind: str  # "secret" | "pii"
    name: str  # e.g. "AWS Access Key", "EMAIL_ADDRESS"


@dataclass
class OutputGuard:
    """Secrets and PII in the provider's answer. Actions: redact | block | monitor (per kind)."""

    secrets: SecretsDetector | None
    pii: PiiDetector | None
    secrets_action: str = "redact"
    pii_action: str = "monitor"
    window: int = 256  # characters held back on streams: longer than any single-line secret
    max_block: int = 16384  # an unterminated private key longer than this is cut off
    findings: list[Finding] = field(default_factory=list)
    held: str = ""
    _seen: str = ""  # emitted text kept for context in monitor mode
    _block: int | None = None  # where in `held` an unterminated private key block starts

    def _spans(self, text: str) -> list[tuple[int, int, Finding]]:
        spans: list[tuple[int, int, Finding]] = []
        if self.secrets is not None and self.secrets_action != "off":
            found = self.secrets.scan(without_placeholders(text))
            spans += [(s.start, s.end, Finding("secret", s.kind)) for s in found]
        if self.pii is not None and self.pii_action != "off":
            spans += [(f.start, f.end, Finding("pii", f.entity)) for f in self.pii.scan(text)]
        return sorted(spans, key=lambda s: s[0])

    def _apply(self, text: str, spans: list[tuple[int, int, Finding]]) -> str:
        out, last = [], 0
        for start, end, finding in spans:
            self.findings.append(finding)
            action = self.secrets_action if finding.kind == "secret" else self.pii_action
            if action == "block":
                raise Blocked(f"output.{finding.kind}s.block" if finding.kind == "secret" else "output.pii.block",
                              f"the answer contains a {finding.name}")
            if action != "redact" or start < last:
                continue
            out.append(text[last:start])
            out.append(f"<SECRET:{finding.name}>" if finding.kind == "secret" else f"<{finding.name}>")
            last = end
        out.append(text[last:])
        return "".join(out)

    def check(self, text: str) -> str:
        """A whole text at once (a plain answer, a tool call's arguments)."""
        return self._apply(text, self._spans(text))

    @property
    def rewrites(self) -> bool:
        return "redact" in (self.secrets_action, self.pii_action) or "block" in (self.secrets_action,
                                                                                 self.pii_action)

    def push(self, text: str) -> str:
        if not self.rewrites:  # monitor: record, change nothing, hold nothing
            context = self._seen[-self.window:]
            spans = [s for s in self._spans(context + text) if s[1] > len(context)]
            self.findings += [f for _, _, f in spans]
            self._seen = (context + text)[-self.window:]
            return text
        buf = self.held + text
        if self._still_open(buf, len(self.held)):  # nothing leaves before the key block ends: scan it then
            self.held = buf
            return ""
        self._block = None
        if not _MAYBE.search(buf):  # prose without digits, '@', ':' or long tokens: nothing to find
            # hold only the word still being written (at most a window of it: CJK has no spaces)
            cut = max(buf.rfind(" ") + 1, len(buf) - self.window)
            self.held = buf[cut:]
            return buf[:cut]
        cut = max(0, len(buf) - self.window)
        block = self.secrets.open_block(buf) if self.secrets is not None else None
        if block is not None and len(buf) - block <= self.max_block:
            cut = min(cut, block)
        else:
            block = None
        spans = self._spans(buf)
        for start, end, _ in spans:
            if start < cut < end:
                cut = start
        self._block = None if block is None else block - cut
        self.held = buf[cut:]
        return self._apply(buf[:cut], [s for s in spans if s[1] <= cut])

    def _still_open(self, buf: str, old: int) -> bool:
        """The key block held since an earlier push has no END line yet (looked for in what is new,
        not in the whole block again: every push rescanning up to max_block was quadratic in it)."""
        if self._block is None or len(buf) - self._block > self.max_block:
            return False
        return PRIVATE_KEY_END.search(buf, max(self._block, old - 64)) is None

    def drain(self) -> str:
        buf, self.held, self._block = self.held, "", None
        if not buf:
            return ""
        return self._apply(buf, self._spans(buf))


type Stage = PseudonymRestorer | OutputGuard | Moderator


def is_guard(stage: Stage) -> bool:
    """A stage that judges the answer (OutputGuard, Moderator), as opposed to the restorer."""
    return not isinstance(stage, PseudonymRestorer)


def whole(stage: Stage, text: str) -> str:
    """A whole text (a plain answer, a snapshot, a tool call's arguments) through one stage."""
    return stage.restore(text) if isinstance(stage, PseudonymRestorer) else stage.check(text)


def may_rewrite(stage: Stage) -> bool:
    """Whether the stage may change the text on the wire (a guard that only monitors does not)."""
    return isinstance(stage, PseudonymRestorer) or stage.rewrites
