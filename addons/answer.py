"""Inspect the answer: tap SSE streams event by event as they flow, read usage and text of plain ones."""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import http

from addons.flows import INLINE_SCAN_CHARS, REQUEST_ID_HEADER, call_of, refuse, scan, scan_failed
from douane import jsonio
from douane.call import Call
from douane.gateway import Gateway
from douane.providers import TextPart
from douane.rewrite import Blocked, OutputGuard, Stage
from douane.streaming import StreamTap, make_decoder

log = logging.getLogger(__name__)

TAP_KEY = "douane.tap"
STAGES_KEY = "douane.stages"


class AnswerAddon:
    def __init__(self, gw: Gateway):
        self.gw = gw

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or flow.response is None:
            return
        resp = flow.response
        resp.headers[REQUEST_ID_HEADER] = call.id
        if resp.timestamp_start and flow.request.timestamp_start:
            call.ttfb_ms = (resp.timestamp_start - flow.request.timestamp_start) * 1000
        if not resp.headers.get("content-type", "").lower().startswith("text/event-stream"):
            return
        adapter = call.provider.adapter
        try:
            decoder = make_decoder(resp.headers.get("content-encoding"))
        except ValueError as e:
            call.note(f"stream not inspected: {e}")
            resp.stream = True
            return
        if decoder is not None:
            del resp.headers["content-encoding"]  # the client gets identity; inspection sees text
        resp.headers.pop("content-length", None)
        stages, audited = self.gw.answer_stages(call.pseudonyms)
        pseudonyms = call.pseudonyms
        tap = StreamTap(adapter, call.endpoint or "", call.request, strip_internal=call.strip_usage_chunk,
                        decoder=decoder, stages=stages, audit_after=audited,
                        stage_factory=lambda: self.gw.answer_stages(pseudonyms))
        flow.metadata[STAGES_KEY] = stages
        flow.metadata[TAP_KEY] = tap
        resp.stream = tap

    async def response(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or flow.response is None:
            return
        resp = flow.response
        resp.headers[REQUEST_ID_HEADER] = call.id
        call.status = resp.status_code
        tap: StreamTap | None = flow.metadata.get(TAP_KEY)
        if tap is not None:
            call.usage.update(tap.usage)
            call.model = tap.model or call.model
            call.response_bytes = tap.bytes_out
            call.response_body = tap.assembled
            if tap.error:
                call.error = f"upstream stream error: {tap.error}"
            self._findings(call, tap.stages)
            if tap.blocked is not None:
                call.decision = "blocked"
                call.note(tap.blocked.rule)
            return
        if resp.stream:  # streamed without a tap (unknown encoding)
            return
        try:
            text = resp.get_text(strict=False) or ""
        except ValueError as e:
            call.note(f"response not inspected: {e}")
            return
        call.response_bytes = len(resp.raw_content or b"")
        call.response_body = text
        if call.endpoint is None:
            return
        try:
            body = jsonio.loads(text)
        except ValueError:
            return
        parsed = call.provider.adapter.parse_response(call.endpoint, body)
        call.usage.update(parsed.usage)
        call.model = parsed.model or call.model
        if resp.status_code >= 400 and call.error is None:
            call.error = f"upstream answered {resp.status_code}"
            return
        stages, audited = self.gw.answer_stages(call.pseudonyms)
        if not stages or not parsed.parts:
            return
        parts = parsed.parts
        try:  # a long answer is scanned in a worker thread, under the guard timeout
            texts, audited_text = await scan(self.gw, sum(len(p.text) for p in parts),
                                             lambda: self._rewrite(parts, stages, audited))
        except Blocked as b:
            self._findings(call, stages)
            call.response_body = None
            refuse(self.gw, flow, call, 403, b.rule, str(b), always=True)
            call.status = 403
            return
        except Exception as e:
            scan_failed(self.gw, flow, call, "answer scan", e)
            if self.gw.policy.fail == "closed":  # refused: the unscanned answer does not leave
                call.response_body = None
                call.status = 503
                return
            # open: forwarded unscanned, with the user's values still put back (fresh stages: the
            # timed-out scan may still be running on its own)
            stages = [s for s in self.gw.answer_stages(call.pseudonyms)[0] if not isinstance(s, OutputGuard)]
            texts, audited_text = self._rewrite(parts, stages, 0)
        restored = [new for part, new in zip(parts, texts, strict=True) if new != part.text]
        for part, text in zip(parts, texts, strict=True):
            part.replace(text)
        self._findings(call, stages)
        if call.request is not None and any(m.role in ("assistant", "model") for m in call.request.messages):
            self._prescan(restored)  # a client that sends its history will send this answer back
        if any(not isinstance(s, OutputGuard) or s.rewrites for s in stages):
            resp.content = jsonio.dumps(body)
            call.response_body = audited_text

    def _prescan(self, texts: list[str]) -> None:
        """A chat client sends this answer back, as it received it, in its next call; what it received
        (the user's values put back, or redactions) is text the PII scan has not seen. Scan it now,
        once the answer is on its way and before that call arrives, instead of in that call. Only
        for calls that carried history: for a one-off call it would be work for nothing."""
        small = [t for t in texts if len(t) <= INLINE_SCAN_CHARS]
        if small:
            asyncio.get_running_loop().call_soon(self._scan_quietly, small)

    def _scan_quietly(self, texts: list[str]) -> None:
        try:
            for text in texts:
                self.gw.pii.scan(text)
        except Exception:  # only a cache left cold: the next call scans the text itself
            log.exception("answer: prescanning the delivered answer failed")

    @staticmethod
    def _rewrite(parts: list[TextPart], stages: list[Stage], audited: int) -> tuple[list[str], str]:
        """Every text of a plain answer through the stages, changing nothing yet: (the new texts, the
        body as the audit keeps it)."""
        kept, out = [], []
        for part in parts:
            text = part.text
            for i, stage in enumerate(stages):
                if i == audited:
                    kept.append(text)
                text = stage.check(text) if isinstance(stage, OutputGuard) else stage.restore(text)
            if audited >= len(stages):
                kept.append(text)
            out.append(text)
        return out, "\n".join(kept)

    @staticmethod
    def _findings(call: Call, stages: list[Stage]) -> None:
        for stage in stages:
            if isinstance(stage, OutputGuard):
                call.output_findings.extend(f"{f.kind}:{f.name}" for f in stage.findings)
                if stage.findings and call.decision != "blocked":
                    kinds = sorted({f"{f.kind}:{f.name}" for f in stage.findings})
                    call.note(f"output: {', '.join(kinds)} ({stage.secrets_action}/{stage.pii_action})")
