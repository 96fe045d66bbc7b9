"""Inspect the answer: tap SSE streams event by event as they flow, read usage and text of plain ones."""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import http

from addons.failures import refuse_answer
from addons.flows import REQUEST_ID_HEADER, call_of
from douane import faults, jsonio
from douane.call import Call
from douane.decision import Block
from douane.gateway import Gateway
from douane.guard import INLINE_SCAN_CHARS, scan, scan_failed
from douane.guard_settings import Guards
from douane.meter.gate import estimate_usage
from douane.providers import CanonicalResponse, TextPart, UnreadableBody
from douane.rewrite import Blocked, Stage, is_guard, may_rewrite, whole
from douane.streaming import StreamTap, make_decoder, record_findings
from douane.toolguard import ToolWatch, check_answer, lead_with

log = logging.getLogger(__name__)

TAP_KEY = "douane.tap"


class AnswerAddon:
    name = "answer"

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
        if resp.headers.get("content-type", "").lower().startswith("text/event-stream"):
            self._tap(flow, call, resp)

    def _tap(self, flow: http.HTTPFlow, call: Call, resp: http.Response) -> None:
        """Read the stream event by event as it flows, rewriting its text through the answer stages."""
        try:
            decoder = make_decoder(resp.headers.get("content-encoding"))
        except ValueError as e:  # an encoding douane cannot read: the text cannot be inspected
            refuse_answer(self.gw, flow, call, Block(502, "unreadable_answer", f"the provider answered in {e}, "
                                                     "which douane cannot inspect", always=True))
            return
        if decoder is not None:
            del resp.headers["content-encoding"]  # the client gets identity; inspection sees text
        resp.headers.pop("content-length", None)
        guards = self.gw.guards(call)
        stages, audited = self.gw.answer_stages(guards, call.pseudonyms)
        pseudonyms = call.pseudonyms
        tap = StreamTap(call.provider.adapter, call.endpoint or "", call.request, strip_internal=call.strip_usage_chunk,
                        decoder=decoder, stages=stages, audit_after=audited,
                        stage_factory=lambda: self.gw.answer_stages(guards, pseudonyms),
                        fail_closed=self.gw.policy.fail == "closed", tools=ToolWatch(self.gw.policy, call))
        tap.faults = flow.metadata.get(faults.METADATA_KEY, frozenset())
        flow.metadata[TAP_KEY] = tap
        resp.stream = tap

    async def response(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or flow.response is None:
            return
        resp = flow.response
        resp.headers[REQUEST_ID_HEADER] = call.id
        call.status = resp.status_code
        if call.decision == "blocked":  # douane's own refusal, made before anything was forwarded
            return
        tap: StreamTap | None = flow.metadata.get(TAP_KEY)
        if tap is not None:
            self._from_tap(call, tap)
        elif not resp.stream:
            await self._plain(flow, call, resp)

    def error(self, flow: http.HTTPFlow) -> None:
        """A stream cut short (the client left, the upstream broke): what the tap saw still counts."""
        call = call_of(flow)
        tap: StreamTap | None = flow.metadata.get(TAP_KEY)
        if call is None or tap is None or call.recorded:
            return
        self._from_tap(call, tap)
        if call.usage.input_tokens is None or call.usage.output_tokens is None:
            estimate_usage(call, tap.seen_chars)
            call.note("usage estimated: the stream ended before the provider reported it")

    def _from_tap(self, call: Call, tap: StreamTap) -> None:
        call.usage.update(tap.usage)
        call.model = tap.model or call.model
        call.response_bytes = tap.bytes_out
        call.response_body = tap.assembled
        if tap.error:
            call.add_error(f"upstream stream error: {tap.error}")
        if tap.failure:
            call.add_error(f"answer.stream failed ({tap.failure})")
            call.note("fail.closed" if tap.failed_closed else "fail.open: guard_error in answer.stream, "
                      "rest of the stream delivered uninspected")
            if tap.failed_closed:
                call.decision = "blocked"
        record_findings(call, tap.stages)
        if tap.blocked is not None:
            call.decision = "blocked"
            call.note(tap.blocked.rule)
            if tap.blocked.rule.startswith("tools."):
                lead_with(call, tap.blocked.rule)

    async def _plain(self, flow: http.HTTPFlow, call: Call, resp: http.Response) -> None:
        """A plain answer: its usage for the meter, its text through the output stages."""
        call.response_bytes = len(resp.raw_content or b"")
        if call.endpoint is None:  # an endpoint douane does not model (files, audio): kept as it came
            try:
                call.response_body = resp.get_text(strict=False)
            except ValueError as e:
                call.note(f"response not readable as text: {e}")
            return
        try:
            text = resp.get_text(strict=True) or ""
        except ValueError as e:
            if resp.status_code < 400:
                refuse_answer(self.gw, flow, call, Block(502, "unreadable_answer",
                                                         f"the provider's answer could not be read ({e})", always=True))
            else:
                call.add_error(f"upstream answered {resp.status_code}, unreadable: {e}")
            return
        call.response_body = text
        try:
            body = jsonio.loads(text)
        except ValueError:
            if resp.status_code < 400:
                call.add_error("the provider's answer is not JSON; delivered as it came")
            return
        try:
            parsed = call.provider.adapter.parse_response(call.endpoint, body)
        except UnreadableBody as e:  # what cannot be read cannot be judged: it does not go out
            if resp.status_code < 400:
                refuse_answer(self.gw, flow, call, Block(502, "unreadable_answer", f"the provider's answer is not "
                                                         f"shaped as its API documents it ({e})", always=True))
            else:
                call.add_error(f"upstream answered {resp.status_code}, in a shape douane cannot read: {e}")
            return
        call.usage.update(parsed.usage)
        call.model = parsed.model or call.model
        if resp.status_code >= 400:
            call.add_error(f"upstream answered {resp.status_code}")
            return
        changed = await self._guard(flow, call, parsed)
        if call.decision == "blocked":  # the output guard refused it
            return
        if self._tools(flow, call, parsed):
            return
        if changed:
            resp.content = jsonio.dumps(body)

    def _tools(self, flow: http.HTTPFlow, call: Call, parsed: CanonicalResponse) -> bool:
        """The answer's tool calls, as the client would get them, judged and recorded; True when one
        is refused (the answer is replaced by the provider's error)."""
        block = check_answer(self.gw.policy, call, parsed.tool_calls)
        if block is None:
            return False
        refuse_answer(self.gw, flow, call, block)
        lead_with(call, block.rule)
        return True

    async def _guard(self, flow: http.HTTPFlow, call: Call, parsed: CanonicalResponse) -> bool:
        """The answer's text through the stages; True when the body must be re-serialised."""
        guards = self.gw.guards(call)
        stages, audited = self.gw.answer_stages(guards, call.pseudonyms)
        if not stages or not parsed.parts:
            return False
        parts = parsed.parts
        try:  # a long answer is scanned in a worker thread, under the guard timeout
            texts, audited_text = await scan(self.gw, sum(len(p.text) for p in parts),
                                             lambda: self._rewrite(parts, stages, audited))
        except Blocked as b:
            record_findings(call, stages)
            refuse_answer(self.gw, flow, call, Block(403, b.rule, str(b), always=True))
            return False
        except Exception as e:
            block = scan_failed(self.gw, call, "answer scan", e)
            if block is not None:  # closed: the unscanned answer does not leave
                refuse_answer(self.gw, flow, call, block)
                return False
            # open: forwarded unscanned, with the user's values still put back (fresh stages: the
            # timed-out scan may still be running on its own)
            stages = [s for s in self.gw.answer_stages(guards, call.pseudonyms)[0] if not is_guard(s)]
            texts, audited_text = self._rewrite(parts, stages, 0)
        restored = [new for part, new in zip(parts, texts, strict=True) if new != part.text]
        for part, text in zip(parts, texts, strict=True):
            part.replace(text)
        record_findings(call, stages)
        if call.request is not None and any(m.role in ("assistant", "model") for m in call.request.messages):
            self._prescan(guards, restored)  # a client that sends its history will send this answer back
        if any(may_rewrite(s) for s in stages):
            call.response_body = audited_text
            return True
        return False

    def _prescan(self, guards: Guards, texts: list[str]) -> None:
        """A chat client sends this answer back, as it received it, in its next call; what it received
        (the user's values put back, or redactions) is text the PII scan has not seen. Scan it now,
        once the answer is on its way and before that call arrives, instead of in that call. Only
        for calls that carried history: for a one-off call it would be work for nothing."""
        small = [t for t in texts if len(t) <= INLINE_SCAN_CHARS]
        if small:
            asyncio.get_running_loop().call_soon(self._scan_quietly, guards, small)

    @staticmethod
    def _scan_quietly(guards: Guards, texts: list[str]) -> None:
        try:
            for text in texts:
                guards.pii_detector.scan(text)
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
                text = whole(stage, text)
            if audited >= len(stages):
                kept.append(text)
            out.append(text)
        return out, "\n".join(kept)
