"""Inspect the prompt on its way out: prompt injection, and PII in every text part of every message.

Small prompts are scanned on the loop (about a millisecond); large ones in a worker thread.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from mitmproxy import http

from addons.flows import call_of, refuse, scan, scan_failed
from douane.call import Call
from douane.detect.injection import NO_EVIDENCE, Verdict
from douane.detect.pii import Finding, Pseudonyms, redact
from douane.detect.prefix import Rewritten
from douane.gateway import Gateway
from douane.providers import TextPart


class PromptGuardAddon:
    def __init__(self, gw: Gateway):
        self.gw = gw

    async def request(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or call.request is None or flow.response or flow.error:
            return
        # The model's own earlier answers are not instructions from anyone: not scanned for injection.
        pairs = [(p, m.role in ("assistant", "model")) for m in call.request.messages for p in m.parts if p.text]
        if not pairs:
            return
        parts = [p for p, _ in pairs]
        texts = [p.text for p in parts]
        trusted = tuple(t for _, t in pairs)
        # Only text not seen before costs a scan: a chat resends its history every turn, and the
        # calls before this one of the same chat may have pseudonymized most of it already.
        # (a one-off call, with no answer of the model in it, is not the turn of a chat worth remembering)
        chat = self._pseudonymizing and any(trusted)
        memo = self.gw.prefixes.longest(texts) if chat else None
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
        fresh = sum(len(t) for t, k in zip(texts, known, strict=True) if k is None) \
            + sum(len(t) for t, v in zip(texts, judged, strict=False) if v is None)
        try:
            verdict, verdicts, findings = await scan(self.gw, fresh, lambda: self._scan(texts, known, judged))
        except Exception as e:
            scan_failed(self.gw, flow, call, "prompt scan", e)
            return
        if verdict is not None and self._injection(flow, call, verdict):
            return
        read = Rewritten(tuple(texts), trusted, tuple(findings), tuple(verdicts))
        self._pii(flow, call, parts, read, memo)

    @property
    def _pseudonymizing(self) -> bool:
        return self.gw.policy.pii.action == "pseudonymize" and self.gw.enforcing

    def _scan(self, texts: list[str], known: list[Sequence[Finding] | None], judged: list[Verdict | None]
              ) -> tuple[Verdict | None, list[Verdict], list[Sequence[Finding]]]:
        """Score and scan what was not seen before (`known` and `judged` hold what was): the strongest
        verdict, each part's verdict (none without an injection guard) and each part's findings."""
        verdicts = []
        if self.gw.injection is not None:
            inj = self.gw.injection
            verdicts = [v if v is not None else inj.score(t) for t, v in zip(texts, judged, strict=True)]
        verdict = max(verdicts, key=lambda v: v.score, default=None)
        findings = [k if k is not None else self.gw.pii.scan(t) for t, k in zip(texts, known, strict=True)]
        return verdict, verdicts, findings

    def _injection(self, flow: http.HTTPFlow, call: Call, verdict: Verdict) -> bool:
        """Record the score; block above the threshold. True when the call was blocked."""
        policy = self.gw.policy.injection
        assert policy is not None
        call.injection_score = verdict.score
        call.injection_rule = verdict.rule
        if verdict.score < policy.threshold:
            return False
        what = f"prompt injection ({', '.join(verdict.rules)}; score {verdict.score:.2f} >= {policy.threshold})"
        if policy.action == "monitor":
            call.note(f"injection.monitor: {what}")
            return False
        return refuse(self.gw, flow, call, 403, "injection.block", f"the prompt looks like {what}")

    def _pii(self, flow: http.HTTPFlow, call: Call, parts: list[TextPart], read: Rewritten,
             memo: Rewritten | None) -> None:
        done = len(memo.texts) if memo is not None else 0
        counts = Counter(memo.counts) if memo is not None else Counter()
        counts.update(f.entity for found in read.findings[done:] for f in found)
        if not counts:
            return
        call.pii_entities = sorted(counts)
        summary = ", ".join(f"{entity} x{n}" for entity, n in sorted(counts.items()))
        action = self.gw.policy.pii.action
        if action == "monitor":
            call.note(f"pii.monitor: {summary}")
        elif action == "block":
            refuse(self.gw, flow, call, 403, "pii.block", f"the prompt contains {summary}")
        elif not self.gw.enforcing:
            call.note(f"monitor: would {action} {summary}")
        else:
            if action == "redact":
                for part, text, found in zip(parts, read.texts, read.findings, strict=True):
                    if found:
                        part.replace(redact(text, found))
            else:
                self._pseudonymize(call, parts, read, memo, counts)
            call.body_changed = True
            call.note(f"pii.{action}: {summary}")

    def _pseudonymize(self, call: Call, parts: list[TextPart], read: Rewritten, memo: Rewritten | None,
                      counts: Counter[str]) -> None:
        """Placeholders in every part, numbered by first appearance: the parts a call of the same chat
        already rewrote are taken as they were sent then, and the numbering goes on from there."""
        done = len(memo.texts) if memo is not None else 0
        pseudonyms = memo.pseudonyms.copy() if memo is not None and memo.pseudonyms is not None else Pseudonyms()
        sent = list(memo.sent) if memo is not None else []
        for text, found in zip(read.texts[done:], read.findings[done:], strict=True):
            sent.append(pseudonyms.apply(text, found) if found else text)
        for part, text, new in zip(parts, read.texts, sent, strict=True):
            if new != text:
                part.replace(new)
        call.pseudonyms = pseudonyms.mapping
        if any(read.trusted):
            self.gw.prefixes.remember(read.rewritten_as(tuple(sent), pseudonyms.copy(), counts))
