"""The prompt guard: prompt injection and PII in every string a request carries, whatever its transport.

The adapter's text parts (messages, system prompt, tool calls and results) are scanned with their
roles: the model's own earlier answers are not instructions from anyone, so they are not scored for
injection. Every other string of the body (tool definitions, metadata, shapes no adapter reads) is
scanned too, as untrusted text: what douane does not read it must not forward unread.

A chat resends its history every turn: the calls before this one of the same chat may have
pseudonymized most of it already (douane.detect.prefix), so only text not seen before costs a scan.
Small scans run on the event loop (about a millisecond); large ones in a worker thread under the
policy's guard timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from douane.call import Call
from douane.decision import Block
from douane.detect.injection import NO_EVIDENCE, Verdict
from douane.detect.pii import Finding, Pseudonyms, redact
from douane.detect.prefix import Rewritten
from douane.providers import TextPart

if TYPE_CHECKING:
    from douane.gateway import Gateway

log = logging.getLogger(__name__)

# Below this many characters a scan takes about a millisecond or less: cheaper on the loop than a
# hop to a worker thread, whose GIL hand-offs (5 ms switch interval) stall every other flow.
INLINE_SCAN_CHARS = 4096


async def scan[T](gw: Gateway, chars: int, work: Callable[[], T]) -> T:
    """Run a guard's scan of `chars` fresh characters: on the loop when small, else in a worker
    thread under the policy's guard timeout (TimeoutError past it)."""
    if chars <= INLINE_SCAN_CHARS:
        return work()
    return await asyncio.wait_for(asyncio.to_thread(work), gw.policy.limits.guard_timeout_s)


def scan_failed(gw: Gateway, call: Call, what: str, error: BaseException) -> Block | None:
    """A guard that failed or timed out follows the policy's `fail`: closed refuses (503), open
    forwards; either way the call's row says so."""
    why = f"took longer than {gw.policy.limits.guard_timeout_s:g} s" if isinstance(error, TimeoutError) \
        else f"failed ({type(error).__name__}: {error})"
    log.error("guard: %s for %s %s", what, call.id, why)
    call.add_error(f"{what} {why}")
    if gw.policy.fail == "closed":
        return Block(503, "fail.closed", f"the {what} {why}; try again later", always=True)
    call.note(f"fail.open: guard_error: {what} {why}, forwarded unscanned")
    return None


@dataclass(slots=True)
class _Read:
    """What the scan of one request found: per part, and the strongest injection verdict."""

    verdict: Verdict | None
    verdicts: list[Verdict]
    findings: list[Sequence[Finding]]


class PromptGuard:
    def __init__(self, gw: Gateway):
        self.gw = gw

    async def inspect(self, call: Call, pseudonyms: Pseudonyms | None = None) -> Block | None:
        """Scan the call's request; rewrite its text in place (redact, pseudonymize) or block it.

        `pseudonyms`: the numbering of a conversation the provider keeps, of which this call sends
        only the new part (a WebSocket session): its placeholders go on from there, and it is updated."""
        if call.request is None:
            return None
        pairs = [(p, m.role in ("assistant", "model")) for m in call.request.messages for p in m.parts if p.text]
        main = len(pairs)  # the adapter's parts: a chat's next call resends them, they are remembered
        pairs += [(p, False) for p in call.other_parts if p.text]
        keys = list(call.other_keys)
        if not pairs and not keys:
            return None
        parts = [p for p, _ in pairs]
        texts = [p.text for p in parts]
        trusted = tuple(t for _, t in pairs)
        memo = self.gw.prefixes.longest(texts[:main]) if self._pseudonymizing and any(trusted) else None
        known, judged = self._known(texts, trusted, memo)
        fresh = sum(len(t) for t, k in zip(texts, known, strict=True) if k is None) \
            + sum(len(t) for t, v in zip(texts, judged, strict=False) if v is None) + sum(map(len, keys))
        try:
            read, key_findings = await scan(self.gw, fresh, lambda: (self._scan(texts, known, judged),
                                                                    [self.gw.pii.scan(k) for k in keys]))
        except Exception as e:
            return scan_failed(self.gw, call, "prompt scan", e)
        if read.verdict is not None and (block := self._injection(call, read.verdict)) is not None:
            return block
        return self._pii(call, parts, trusted[:main], read, memo, key_findings, pseudonyms)

    @property
    def _pseudonymizing(self) -> bool:
        return self.gw.policy.pii.action == "pseudonymize" and self.gw.enforcing

    def _known(self, texts: list[str], trusted: tuple[bool, ...], memo: Rewritten | None
               ) -> tuple[list[Sequence[Finding] | None], list[Verdict | None]]:
        """The findings and verdicts already known (remembered or cached); None where a scan is due."""
        done = len(memo.texts) if memo is not None else 0
        known: list[Sequence[Finding] | None] = [*memo.findings] if memo is not None else []
        known += [self.gw.pii.lookup(t) for t in texts[done:]]
        judged: list[Verdict | None] = []
        if self.gw.injection is not None:
            inj = self.gw.injection
            if memo is not None and memo.trusted == trusted[:done]:  # the same roles: the same verdicts
                judged = [*memo.verdicts]
            judged += [NO_EVIDENCE if t else inj.lookup(x)
                       for x, t in zip(texts[len(judged):], trusted[len(judged):], strict=True)]
        return known, judged

    def _scan(self, texts: list[str], known: list[Sequence[Finding] | None], judged: list[Verdict | None]) -> _Read:
        """Score and scan what was not seen before (`known` and `judged` hold what was)."""
        verdicts = []
        if self.gw.injection is not None:
            inj = self.gw.injection
            verdicts = [v if v is not None else inj.score(t) for t, v in zip(texts, judged, strict=True)]
        verdict = max(verdicts, key=lambda v: v.score, default=None)
        findings = [k if k is not None else self.gw.pii.scan(t) for t, k in zip(texts, known, strict=True)]
        return _Read(verdict, verdicts, findings)

    def _injection(self, call: Call, verdict: Verdict) -> Block | None:
        """Record the score; block at or above the threshold."""
        policy = self.gw.policy.injection
        assert policy is not None
        call.injection_score = verdict.score
        call.injection_rule = verdict.rule
        if verdict.score < policy.threshold:
            return None
        what = f"prompt injection ({', '.join(verdict.rules)}; score {verdict.score:.2f} >= {policy.threshold})"
        if policy.action == "monitor":
            call.note(f"injection.monitor: {what}")
            return None
        return Block(403, "injection.block", f"the prompt looks like {what}")

    def _pii(self, call: Call, parts: list[TextPart], chat_roles: tuple[bool, ...], read: _Read,
             memo: Rewritten | None, key_findings: list[list[Finding]], session: Pseudonyms | None) -> Block | None:
        """`chat_roles` marks, for the adapter's parts (the first ones), those of the model's own answers."""
        main = len(chat_roles)
        done = len(memo.texts) if memo is not None else 0
        counts = Counter(memo.counts) if memo is not None else Counter()
        counts.update(f.entity for found in read.findings[done:main] for f in found)
        elsewhere = Counter(f.entity for found in read.findings[main:] for f in found)
        in_keys = Counter(f.entity for found in key_findings for f in found)
        total = counts + elsewhere + in_keys
        if not total:
            return None
        call.pii_entities = sorted(total)
        summary = ", ".join(f"{entity} x{n}" for entity, n in sorted(total.items()))
        action = self.gw.policy.pii.action
        if action == "monitor":
            call.note(f"pii.monitor: {summary}")
            return None
        if action == "block":
            return Block(403, "pii.block", f"the prompt contains {summary}")
        if not self.gw.enforcing:
            call.note(f"monitor: would {action} {summary}")
            return None
        if in_keys:  # a key cannot be rewritten without changing what the body means: refuse
            return Block(400, "pii.in_key", f"a JSON object key of the body holds {', '.join(sorted(in_keys))}, "
                         f"which douane cannot {action}; send it as a string value instead", always=True)
        texts = [p.text for p in parts]
        if action == "redact":
            for part, text, found in zip(parts, texts, read.findings, strict=True):
                if found:
                    part.replace(redact(text, found))
        else:
            self._pseudonymize(call, parts, texts, chat_roles, read, memo, counts, session)
        call.body_changed = True
        call.note(f"pii.{action}: {summary}")
        return None

    def _pseudonymize(self, call: Call, parts: list[TextPart], texts: list[str], chat_roles: tuple[bool, ...],
                      read: _Read, memo: Rewritten | None, counts: Counter[str], session: Pseudonyms | None) -> None:
        """Placeholders in every part, numbered by first appearance: the parts a call of the same chat
        already rewrote are taken as they were sent then, and the numbering goes on from there. The
        chat's own parts are remembered for its next call; the body's other strings come after them."""
        main = len(chat_roles)
        done = len(memo.texts) if memo is not None else 0
        pseudonyms = memo.pseudonyms.copy() if memo is not None and memo.pseudonyms is not None \
            else session if session is not None else Pseudonyms()
        sent = list(memo.sent) if memo is not None else []
        for text, found in zip(texts[done:main], read.findings[done:main], strict=True):
            sent.append(pseudonyms.apply(text, found) if found else text)
        chat = Rewritten(tuple(texts[:main]), chat_roles, tuple(read.findings[:main]), tuple(read.verdicts[:main]))
        if any(chat_roles):
            self.gw.prefixes.remember(chat.rewritten_as(tuple(sent), pseudonyms.copy(), counts))
        for text, found in zip(texts[main:], read.findings[main:], strict=True):
            sent.append(pseudonyms.apply(text, found) if found else text)
        for part, text, new in zip(parts, texts, sent, strict=True):
            if new != text:
                part.replace(new)
        call.pseudonyms = pseudonyms.mapping
