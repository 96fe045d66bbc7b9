"""The answer side of a call, whatever carries it: a plain answer judged whole, a streamed one tapped
event by event (douane.streaming.StreamTap), and what either leaves on the call for the meter and
the audit. addons/answer.py glues it to mitmproxy's flows; `douane policy test` feeds it canned
answers, so both decide with the same code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from douane import jsonio
from douane.call import Call
from douane.decision import Block
from douane.guard import INLINE_SCAN_CHARS, scan, scan_failed
from douane.guard_settings import Guards
from douane.meter.gate import estimate_usage
from douane.providers import CanonicalResponse, TextPart, UnreadableBody
from douane.rewrite import Blocked, Stage, is_guard, may_rewrite, whole
from douane.streaming import StreamTap, record_findings
from douane.toolguard import ToolWatch, check_answer, lead_with

if TYPE_CHECKING:
    from douane.gateway import Gateway

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PlainVerdict:
    """What becomes of a plain answer: withheld for `block` (the provider's error goes out instead),
    sent as `body` (rewritten), or, with neither, sent as it came."""

    block: Block | None = None
    body: bytes | None = None
    lead: bool = False  # the block's rule leads the row's reason (a tool call refused in the answer)


KEEP = PlainVerdict()


async def judge_plain(gw: Gateway, call: Call, status: int, text: str) -> PlainVerdict:
    """A plain answer of a modelled endpoint, read as text: its usage for the meter, its text through
    the output stages, its tool calls judged."""
    call.response_body = text
    try:
        body = jsonio.loads(text)
    except ValueError:
        if status < 400:
            call.add_error("the provider's answer is not JSON; delivered as it came")
        return KEEP
    assert call.endpoint is not None
    try:
        parsed = call.provider.adapter.parse_response(call.endpoint, body)
    except UnreadableBody as e:  # what cannot be read cannot be judged: it does not go out
        if status < 400:
            return PlainVerdict(Block(502, "unreadable_answer", f"the provider's answer is not shaped as its API "
                                      f"documents it ({e})", always=True))
        call.add_error(f"upstream answered {status}, in a shape douane cannot read: {e}")
        return KEEP
    call.usage.update(parsed.usage)
    call.model = parsed.model or call.model
    if status >= 400:
        call.add_error(f"upstream answered {status}")
        return KEEP
    changed, block = await _guard(gw, call, parsed)
    if block is not None:  # the output guard refused it
        return PlainVerdict(block)
    block = check_answer(gw.policy, call, parsed.tool_calls)  # as the client would get them
    if block is not None:
        return PlainVerdict(block, lead=True)
    return PlainVerdict(body=jsonio.dumps(body)) if changed else KEEP


async def _guard(gw: Gateway, call: Call, parsed: CanonicalResponse) -> tuple[bool, Block | None]:
    """The answer's text through the stages: (whether the body must be re-serialised, a block)."""
    guards = gw.guards(call)
    stages, audited = gw.answer_stages(guards, call.pseudonyms)
    if not stages or not parsed.parts:
        return False, None
    parts = parsed.parts
    try:  # a long answer is scanned in a worker thread, under the guard timeout
        texts, audited_text = await scan(gw, sum(len(p.text) for p in parts), lambda: rewrite(parts, stages, audited))
    except Blocked as b:
        record_findings(call, stages)
        return False, Block(403, b.rule, str(b), always=True)
    except Exception as e:
        block = scan_failed(gw, call, "answer scan", e)
        if block is not None:  # closed: the unscanned answer does not leave
            return False, block
        # open: forwarded unscanned, with the user's values still put back (fresh stages: the
        # timed-out scan may still be running on its own)
        stages = [s for s in gw.answer_stages(guards, call.pseudonyms)[0] if not is_guard(s)]
        texts, audited_text = rewrite(parts, stages, 0)
    restored = [new for part, new in zip(parts, texts, strict=True) if new != part.text]
    for part, text in zip(parts, texts, strict=True):
        part.replace(text)
    record_findings(call, stages)
    if call.request is not None and any(m.role in ("assistant", "model") for m in call.request.messages):
        prescan(guards, restored)  # a client that sends its history will send this answer back
    if any(may_rewrite(s) for s in stages):
        call.response_body = audited_text
        return True, None
    return False, None


def prescan(guards: Guards, texts: list[str]) -> None:
    """A chat client sends this answer back, as it received it, in its next call; what it received
    (the user's values put back, or redactions) is text the PII scan has not seen. Scan it now,
    once the answer is on its way and before that call arrives, instead of in that call. Only
    for calls that carried history: for a one-off call it would be work for nothing."""
    small = [t for t in texts if len(t) <= INLINE_SCAN_CHARS]
    if small:
        asyncio.get_running_loop().call_soon(_scan_quietly, guards, small)


def _scan_quietly(guards: Guards, texts: list[str]) -> None:
    try:
        for text in texts:
            guards.pii_detector.scan(text)
    except Exception:  # only a cache left cold: the next call scans the text itself
        log.exception("answer: prescanning the delivered answer failed")


def rewrite(parts: list[TextPart], stages: list[Stage], audited: int) -> tuple[list[str], str]:
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


# -- streamed answers ---------------------------------------------------------------------------------


def open_tap(gw: Gateway, call: Call, decoder: Callable[[bytes], bytes] | None) -> StreamTap:
    """The tap that reads a streamed answer event by event as it flows, rewriting its text through
    the answer stages of the call's guard settings."""
    guards = gw.guards(call)
    stages, audited = gw.answer_stages(guards, call.pseudonyms)
    pseudonyms = call.pseudonyms
    return StreamTap(call.provider.adapter, call.endpoint or "", call.request, strip_internal=call.strip_usage_chunk,
                     decoder=decoder, stages=stages, audit_after=audited,
                     stage_factory=lambda: gw.answer_stages(guards, pseudonyms),
                     fail_closed=gw.policy.fail == "closed", tools=ToolWatch(gw.policy, call))


def from_tap(call: Call, tap: StreamTap) -> None:
    """What the tap saw of a stream that ended, on its call: usage, model, the assembled text (as the
    audit keeps it), findings, and a block or a failure."""
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


def from_cut_tap(call: Call, tap: StreamTap) -> None:
    """A stream cut short (the client left, the upstream broke): what the tap saw still counts, and
    the usage the provider never reported is estimated from it."""
    from_tap(call, tap)
    if call.usage.input_tokens is None or call.usage.output_tokens is None:
        estimate_usage(call, tap.seen_chars)
        call.note("usage estimated: the stream ended before the provider reported it")
