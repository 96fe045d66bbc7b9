"""The prompt guard: invisible characters, prompt injection and PII in every string a request
carries, whatever its transport, under the guard settings of the call's scope (Gateway.guards).

Invisible and control characters go first (douane.detect.sanitize): stripped, refused or recorded
per `sanitize:`, so that the scans after it read, and the provider receives, the text a reviewer
sees; what tag characters spell is scored for injection whatever `sanitize:` says.

The adapter's text parts (messages, system prompt, tool calls and results) are scanned with their
roles: the model's own earlier answers are not instructions from anyone, so they are not scored for
injection. Every other string of the body (tool definitions, metadata, shapes no adapter reads) is
scanned too, as untrusted text: what douane does not read it must not forward unread.

A chat resends its history every turn: the calls before this one of the same chat may have
pseudonymized most of it already (douane.detect.prefix, keyed by the texts as the client sent them,
remembering them as they were sent on: sanitised and pseudonymized), so only text not seen before
costs a scan.
Small scans run on the event loop (about a millisecond); large ones in a worker thread under the
policy's guard timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from douane.call import Call, ToolUse
from douane.decision import Block
from douane.detect import budget
from douane.detect.injection import NO_EVIDENCE, Verdict
from douane.detect.pii import Finding, Pseudonyms, redact
from douane.detect.prefix import Rewritten
from douane.detect.sanitize import NOTHING, Sanitized, summary
from douane.guard_settings import Guards
from douane.providers import TextPart, ToolResult
from douane.toolguard import RESULT, check_request

if TYPE_CHECKING:
    from douane.gateway import Gateway

log = logging.getLogger(__name__)

# Below this many characters a scan takes about a millisecond or less: cheaper on the loop than a
# hop to a worker thread, whose GIL hand-offs (5 ms switch interval) stall every other flow.
INLINE_SCAN_CHARS = 4096


async def scan[T](gw: Gateway, chars: int, work: Callable[[], T]) -> T:
    """Run a guard's scan of `chars` fresh characters: on the loop when small, else in a worker
    thread under the policy's guard timeout (TimeoutError past it). The thread's detectors stop
    themselves at the same deadline (douane.detect.budget): a thread cannot be killed, and a scan
    left running would go on burning a core."""
    if chars <= INLINE_SCAN_CHARS:
        return work()
    timeout = gw.policy.limits.guard_timeout_s
    deadline = time.monotonic() + timeout
    return await asyncio.wait_for(asyncio.to_thread(budget.run_until, deadline, work), timeout)


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
class Cleaning:
    """What sanitising a request's strings did: what their invisible characters spell (for the
    injection scan), whether any string was rewritten, and a block."""

    hidden: list[str] = field(default_factory=list)
    changed: bool = False
    block: Block | None = None
    first: int | None = None  # the first string (parts, then keys) that holds any: None when all are clean


def sanitize_strings(guards: Guards, parts: Sequence[TextPart], keys: Sequence[str], enforcing: bool,
                     note: Callable[[str], None], judged: Sequence[Sanitized] | None = None) -> Cleaning:
    """Invisible and control characters in every string of a request, under the scope's `sanitize`:
    stripped in place (`strip`), refused (`block`, 403) or recorded (`monitor`); `note` gets what
    was done, with the classes and counts. Without `sanitize` (injection alone) only what they
    spell is returned. `judged`: the answers for the parts' texts then the keys; judged here when
    not given."""
    sanitizer = guards.sanitizer
    if sanitizer is None:
        return Cleaning()
    keys = list(dict.fromkeys(keys))
    if judged is None:
        judged = [sanitizer.lookup(t) or sanitizer.judge(t) for t in [*(p.text for p in parts), *keys]]
    found = [(p, r) for p, r in zip(parts, judged, strict=False) if r.found]
    in_keys = [r for r in judged[len(parts):] if r.found]
    results = [r for _, r in found] + in_keys
    out = Cleaning(hidden=[r.hidden for r in results if r.hidden])
    setting = guards.sanitize
    if setting is None or not results:
        return out
    summary = _summary(results)
    if setting.action == "monitor":
        note(f"sanitize.monitor: {summary}")
    elif not enforcing:
        note(f"monitor: would {setting.action} invisible or control characters: {summary}")
    elif setting.action == "block":
        note(f"sanitize: {summary}")
        out.block = Block(403, "sanitize.block", f"the prompt holds invisible or control characters ({summary}); "
                          "remove them and send it again")
    elif in_keys:  # a key cannot be rewritten without changing what the body means: refuse
        out.block = Block(400, "sanitize.in_key", f"a JSON object key of the body holds invisible or control "
                          f"characters ({_summary(in_keys)}), which douane cannot strip; remove them", always=True)
    else:
        for part, result in found:
            part.replace(result.text)
        out.changed = True
        note(f"sanitize.strip: {summary}")
    return out


def _summary(results: Sequence[Sanitized]) -> str:
    """e.g. "tag x41, zero_width x2" over several texts."""
    counts: Counter[str] = Counter()
    for r in results:
        counts.update(r.counts)
    return summary(counts)


@dataclass(slots=True)
class _Read:
    """What the scan of one request found: per part, and the strongest injection verdict."""

    verdict: Verdict | None
    verdicts: list[Verdict]
    findings: list[Sequence[Finding]]
    hidden: bool = False  # the strongest verdict is on text that invisible characters spell


class PromptGuard:
    def __init__(self, gw: Gateway):
        self.gw = gw

    async def inspect(self, call: Call, pseudonyms: Pseudonyms | None = None) -> Block | None:
        """Scan the call's request; rewrite its text in place (strip, redact, pseudonymize) or block it.

        `pseudonyms`: the numbering of a conversation the provider keeps, of which this call sends
        only the new part (a WebSocket session): its placeholders go on from there, and it is updated."""
        if call.request is None:
            return None
        block = check_request(self.gw.policy, call)  # tools offered, called in the history, results sent back
        if block is not None:
            return block
        guards = self.gw.guards(call)
        parts, texts, roles = self._parts(call)
        main = len(roles)  # the adapter's parts: a chat's next call resends them, they are remembered
        keys = list(call.other_keys)
        if not parts and not keys:
            return None
        as_sent = tuple(texts[:main])  # as the client sent them: how its next call finds them
        trusted = (*roles, *(False,) * (len(parts) - main))
        memo = guards.prefixes.longest(as_sent) if self._pseudonymizing(guards) and any(roles) else None
        cleaning = await self._sanitize(call, guards, texts, parts, keys, memo)
        if isinstance(cleaning, Block):
            return cleaning
        if cleaning.changed:  # stripped in place: the scans read what will be sent
            texts = [p.text for p in parts]
        known, judged = self._known(guards, texts, trusted, memo)
        fresh = sum(len(t) for t, k in zip(texts, known, strict=True) if k is None) \
            + sum(len(t) for t, v in zip(texts, judged, strict=False) if v is None) + sum(map(len, keys)) \
            + sum(map(len, cleaning.hidden))
        pii = guards.pii_detector
        try:
            read, key_findings = await scan(self.gw, fresh, lambda: (
                self._scan(guards, texts, known, judged, cleaning.hidden), [pii.scan(k) for k in keys]))
        except Exception as e:
            return scan_failed(self.gw, call, "prompt scan", e)
        if guards.second_tier is not None:
            try:
                read = await self._second_opinion(guards, texts, read)
            except Exception as e:
                return scan_failed(self.gw, call, "second-tier injection scan", e)
        result_block, verdict = self._tool_results(call, guards, parts, read)
        if read.hidden:  # what invisible characters spell outweighs any part's own score
            verdict = read.verdict
        if verdict is not None and (block := self._injection(call, guards, verdict, read.hidden)) is not None:
            return block
        if result_block is not None:
            return result_block
        clean = cleaning.first is None or cleaning.first >= main  # the chat's own parts: what its next call resends
        return self._pii(call, guards, parts, as_sent, trusted[:main], read, memo, key_findings, pseudonyms, clean)

    @staticmethod
    def _parts(call: Call) -> tuple[list[TextPart], list[str], list[bool]]:
        """The parts that hold text (the adapter's, then the body's other strings), their texts, and
        for the adapter's whether the model wrote it (one pass: a long chat has hundreds)."""
        assert call.request is not None
        parts: list[TextPart] = []
        texts: list[str] = []
        roles: list[bool] = []
        for m in call.request.messages:
            own = m.role in ("assistant", "model")
            for p in m.parts:
                if text := p.text:
                    parts.append(p)
                    texts.append(text)
                    roles.append(own)
        for p in call.other_parts:
            if text := p.text:
                parts.append(p)
                texts.append(text)
        return parts, texts, roles

    async def _second_opinion(self, guards: Guards, texts: list[str], read: _Read) -> _Read:
        """Ask the second tier about the texts the rules are unsure of (from `second_tier_from` to
        below the threshold); its probability can raise a score, never lower one."""
        policy, tier = guards.injection, guards.second_tier
        assert policy is not None and tier is not None
        unsure = [i for i, v in enumerate(read.verdicts)
                  if policy.second_tier_from <= v.score < policy.threshold and texts[i].strip()]
        if not unsure:
            return read
        probabilities = await asyncio.wait_for(tier.score([texts[i] for i in unsure]),
                                               self.gw.policy.limits.guard_timeout_s)
        verdicts = list(read.verdicts)
        for i, p in zip(unsure, probabilities, strict=True):
            if p > verdicts[i].score:
                verdicts[i] = Verdict(p, (tier.name, *verdicts[i].rules))
        best = max(verdicts, key=lambda v: v.score)
        if read.hidden and read.verdict is not None and read.verdict.score >= best.score:
            return _Read(read.verdict, verdicts, read.findings, hidden=True)
        return _Read(best, verdicts, read.findings)

    async def _sanitize(self, call: Call, guards: Guards, texts: list[str], parts: list[TextPart], keys: list[str],
                        memo: Rewritten | None) -> Cleaning | Block:
        """Invisible characters first, so that the scans after this read the text as it will be sent.
        Each string is looked up at once (the quick test, or the cache), once however often the body
        repeats it; those that must be judged character by character are, in a worker thread under the
        guard timeout when long. The texts a remembered call of the same chat found clean are clean."""
        sanitizer = guards.sanitizer
        if sanitizer is None:
            return Cleaning()
        unique = list(dict.fromkeys(keys))
        strings = [*texts, *unique]
        clean = len(memo.texts) if memo is not None and memo.clean else 0
        answers = {t: sanitizer.lookup(t) for t in dict.fromkeys(strings[clean:])}
        known = [NOTHING] * clean + [answers[t] for t in strings[clean:]]
        pending = sum(len(t) for t, k in zip(strings, known, strict=True) if k is None)
        try:
            judged = known if not pending else await scan(self.gw, pending, lambda: [
                k or sanitizer.judge(t) for t, k in zip(strings, known, strict=True)])
        except Exception as e:
            return scan_failed(self.gw, call, "sanitize scan", e) or Cleaning(first=0)  # unjudged: never clean
        cleaning = sanitize_strings(guards, parts, unique, self.gw.enforcing, call.note,
                                    [k for k in judged if k is not None])
        cleaning.first = next((i for i, k in enumerate(judged) if k is not None and k.found), None)
        if cleaning.changed and call.model_requested and sanitizer.check(call.model_requested):
            # access and routing were decided on the name as sent: stripping it now would send another
            return Block(400, "sanitize.in_model", f"the model name {call.model_requested!r} holds invisible or "
                         "control characters; send the name without them")
        call.body_changed |= cleaning.changed
        return cleaning.block or cleaning

    def _pseudonymizing(self, guards: Guards) -> bool:
        return guards.pii.action == "pseudonymize" and self.gw.enforcing

    @staticmethod
    def _known(guards: Guards, texts: list[str], trusted: tuple[bool, ...], memo: Rewritten | None
               ) -> tuple[list[Sequence[Finding] | None], list[Verdict | None]]:
        """The findings and verdicts already known (remembered or cached); None where a scan is due."""
        done = len(memo.texts) if memo is not None else 0
        known: list[Sequence[Finding] | None] = [*memo.findings] if memo is not None else []
        pii = {t: guards.pii_detector.lookup(t) for t in dict.fromkeys(texts[done:])}  # once per text
        known += [pii[t] for t in texts[done:]]
        judged: list[Verdict | None] = []
        if guards.injection_detector is not None:
            inj = guards.injection_detector
            if memo is not None and memo.trusted == trusted[:done]:  # the same roles: the same verdicts
                judged = [*memo.verdicts]
            rest = texts[len(judged):]
            scored = {x: inj.lookup(x) for x, t in zip(rest, trusted[len(judged):], strict=True) if not t}
            judged += [NO_EVIDENCE if t else scored[x] for x, t in zip(rest, trusted[len(judged):], strict=True)]
        return known, judged

    @staticmethod
    def _scan(guards: Guards, texts: list[str], known: list[Sequence[Finding] | None],
              judged: list[Verdict | None], hidden: list[str]) -> _Read:
        """Score and scan what was not seen before (`known` and `judged` hold what was). What invisible
        characters spell is scored too, whoever's part held them: the model never writes them."""
        verdicts: list[Verdict] = []
        hidden_verdict = None
        if guards.injection_detector is not None:
            inj = guards.injection_detector
            verdicts = [v if v is not None else inj.score(t) for t, v in zip(texts, judged, strict=True)]
            hidden_verdict = max((inj.score(h) for h in hidden), key=lambda v: v.score, default=None)
        verdict = max(verdicts, key=lambda v: v.score, default=None)
        from_hidden = hidden_verdict is not None and (verdict is None or hidden_verdict.score > verdict.score)
        findings = [k if k is not None else guards.pii_detector.scan(t) for t, k in zip(texts, known, strict=True)]
        return _Read(hidden_verdict if from_hidden else verdict, verdicts, findings, from_hidden)

    def _tool_results(self, call: Call, guards: Guards, parts: list[TextPart], read: _Read
                      ) -> tuple[Block | None, Verdict | None]:
        """Tool results are untrusted input (a web page, a file, another agent's output) judged under
        their own threshold, `injection.tool_result_threshold`; the result that crosses it blocks (or
        is recorded, `monitor`) and its tool_calls row says which tool returned it. Returns that
        block, and the strongest verdict over the other parts, for the prompt's own threshold."""
        policy = guards.injection
        owner = {id(p): use for use in call.tool_calls if use.direction == RESULT and isinstance(use.source, ToolResult)
                 for p in use.source.parts}
        if policy is None or not owner or not read.verdicts:
            return None, read.verdict
        threshold = policy.threshold if policy.tool_result_threshold is None else policy.tool_result_threshold
        rest: list[Verdict] = []
        worst: tuple[Verdict, ToolUse] | None = None
        for part, verdict in zip(parts, read.verdicts, strict=False):
            use = owner.get(id(part))
            if use is None:
                rest.append(verdict)
            elif worst is None or verdict.score > worst[0].score:
                worst = (verdict, use)
        others = max(rest, key=lambda v: v.score, default=None)
        if worst is None:
            return None, others
        verdict, use = worst
        if call.injection_score is None or verdict.score >= call.injection_score:  # the row has the highest score
            call.injection_score, call.injection_rule = verdict.score, verdict.rule
        if verdict.score < threshold:
            return None, others
        what = (f"the result of tool {use.tool or '(unnamed)'} looks like prompt injection "
                f"({', '.join(verdict.rules)}; score {verdict.score:.2f} >= {threshold})")
        use.rule = "injection.tool_result"
        if policy.action == "monitor" or not self.gw.enforcing:
            use.decision = "monitored"
            call.note(f"injection.tool_result (monitor): {what}")
            return None, others
        use.decision = "blocked"
        # the call's rule is the policy's (injection.block); its tool_calls row says it was a tool result
        return Block(403, "injection.block", f"{what} (injection.tool_result); the call was not forwarded"), others

    @staticmethod
    def _injection(call: Call, guards: Guards, verdict: Verdict, hidden: bool) -> Block | None:
        """Record the score (the row keeps the highest); block at or above the threshold."""
        policy = guards.injection
        assert policy is not None
        if call.injection_score is None or verdict.score >= call.injection_score:
            call.injection_score = verdict.score
            call.injection_rule = verdict.rule
        if verdict.score < policy.threshold:
            return None
        where = " in text hidden by invisible characters" if hidden else ""
        what = f"prompt injection{where} ({', '.join(verdict.rules)}; score {verdict.score:.2f} >= {policy.threshold})"
        if policy.action == "monitor":
            call.note(f"injection.monitor: {what}")
            return None
        if hidden:
            call.note(f"injection.hidden: {', '.join(verdict.rules)}")
        return Block(403, "injection.block", f"the prompt looks like {what}")

    def _pii(self, call: Call, guards: Guards, parts: list[TextPart], as_sent: tuple[str, ...],
             chat_roles: tuple[bool, ...], read: _Read, memo: Rewritten | None, key_findings: list[list[Finding]],
             session: Pseudonyms | None, clean: bool = False) -> Block | None:
        """`chat_roles` marks, for the adapter's parts (the first ones), those of the model's own answers;
        `as_sent` holds those parts as the client sent them."""
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
        action = guards.pii.action
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
        if action == "redact":
            for part, found in zip(parts, read.findings, strict=True):
                if found:
                    part.replace(redact(part.text, found))
        else:
            self._pseudonymize(call, guards, parts, as_sent, chat_roles, read, memo, counts, session, clean)
        call.body_changed = True
        call.note(f"pii.{action}: {summary}")
        return None

    @staticmethod
    def _pseudonymize(call: Call, guards: Guards, parts: list[TextPart], as_sent: tuple[str, ...],
                      chat_roles: tuple[bool, ...], read: _Read, memo: Rewritten | None, counts: Counter[str],
                      session: Pseudonyms | None, clean: bool = False) -> None:
        """Placeholders in every part, numbered by first appearance: the parts a call of the same chat
        already rewrote are taken as they were sent then, and the numbering goes on from there. The
        chat's own parts are remembered for its next call, keyed as the client sent them; the body's
        other strings come after them."""
        main = len(chat_roles)
        done = len(memo.texts) if memo is not None else 0
        pseudonyms = memo.pseudonyms.copy() if memo is not None and memo.pseudonyms is not None \
            else session if session is not None else Pseudonyms()
        texts = [p.text for p in parts]
        sent = list(memo.sent) if memo is not None else []
        for text, found in zip(texts[done:main], read.findings[done:main], strict=True):
            sent.append(pseudonyms.apply(text, found) if found else text)
        chat = Rewritten(as_sent, chat_roles, tuple(read.findings[:main]), tuple(read.verdicts[:main]), clean=clean)
        if any(chat_roles):
            guards.prefixes.remember(chat.rewritten_as(tuple(sent), pseudonyms.copy(), counts))
        for text, found in zip(texts[main:], read.findings[main:], strict=True):
            sent.append(pseudonyms.apply(text, found) if found else text)
        for part, text, new in zip(parts, texts, sent, strict=True):
            if new != text:
                part.replace(new)
        call.pseudonyms = pseudonyms.mapping
