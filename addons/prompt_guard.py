"""Inspect the prompt on its way out: PII in every text part of every message, scanned off the loop."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from mitmproxy import http

from addons.flows import call_of, refuse
from douane.detect.pii import Pseudonyms, redact
from douane.gateway import Gateway

log = logging.getLogger(__name__)


# Below this many characters a scan takes about a millisecond or less: cheaper on the loop than a
# hop to a worker thread, whose GIL hand-offs (5 ms switch interval) stall every other flow.
INLINE_SCAN_CHARS = 4096


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
        texts = [p.text for p in parts]
        try:
            if sum(map(len, texts)) <= INLINE_SCAN_CHARS:
                findings = [self.gw.pii.scan(t) for t in texts]
            else:
                findings = await asyncio.to_thread(lambda: [self.gw.pii.scan(t) for t in texts])
        except Exception as e:  # a guard that fails follows the policy's `fail`
            log.exception("pii: scan failed for %s", call.id)
            call.error = f"pii scan failed: {e}"
            if self.gw.policy.fail == "closed":
                refuse(self.gw, flow, call, 503, "fail.closed", "the PII scanner failed; try again later")
            else:
                call.note("fail.open: pii scan failed, forwarded unscanned")
            return
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
