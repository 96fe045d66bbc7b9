"""Inspect the prompt on its way out: prompt injection, and PII in every text part of every message.

Small prompts are scanned on the loop (about a millisecond); large ones in a worker thread.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from mitmproxy import http

from addons.flows import call_of, refuse, scan, scan_failed
from douane.call import Call
from douane.detect.injection import Verdict
from douane.detect.pii import Finding, Pseudonyms, redact
from douane.gateway import Gateway
from douane.providers import TextPart


class PromptGuardAddon:
    def __init__(self, gw: Gateway):
        self.gw = gw

    async def request(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or call.request is None or flow.response or flow.error:
            return
        parts = [p for p in call.request.text_parts() if p.text]
        if not parts:
            return
        # The model's own earlier answers are not instructions from anyone: not scanned for injection.
        untrusted = [p.text for m in call.request.messages if m.role not in ("assistant", "model")
                     for p in m.parts if p.text]
        # Only text not seen before costs a scan: a chat resends its history every turn.
        known = [self.gw.pii.lookup(p.text) for p in parts]
        judged = [self.gw.injection.lookup(t) for t in untrusted] if self.gw.injection is not None else []
        fresh = sum(len(p.text) for p, k in zip(parts, known, strict=True) if k is None) \
            + sum(len(t) for t, k in zip(untrusted, judged, strict=False) if k is None)
        try:
            verdict, findings = await scan(self.gw, fresh, lambda: self._scan(parts, untrusted, known, judged))
        except Exception as e:
            scan_failed(self.gw, flow, call, "prompt scan", e)
            return
        if verdict is not None and self._injection(flow, call, verdict):
            return
        self._pii(flow, call, parts, findings)

    def _scan(self, parts: list[TextPart], untrusted: list[str], known: list[tuple[Finding, ...] | None],
              judged: list[Verdict | None]) -> tuple[Verdict | None, list[Sequence[Finding]]]:
        """Score and scan what was not seen before; `known` and `judged` hold what was."""
        verdict = None
        if self.gw.injection is not None:
            inj = self.gw.injection
            verdicts = [v if v is not None else inj.score(t) for t, v in zip(untrusted, judged, strict=True)]
            verdict = max(verdicts, key=lambda v: v.score, default=None)
        return verdict, [k if k is not None else self.gw.pii.scan(p.text) for p, k in zip(parts, known, strict=True)]

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

    def _pii(self, flow: http.HTTPFlow, call: Call, parts: list[TextPart], findings: list[Sequence[Finding]]) -> None:
        counts = Counter(f.entity for found in findings for f in found)
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
            pseudonyms = Pseudonyms() if action == "pseudonymize" else None
            for part, found in zip(parts, findings, strict=True):
                if found:
                    part.replace(pseudonyms.apply(part.text, found) if pseudonyms else redact(part.text, found))
            if pseudonyms is not None:
                call.pseudonyms = pseudonyms.mapping
            call.body_changed = True
            call.note(f"pii.{action}: {summary}")
