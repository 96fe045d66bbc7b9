"""Output moderation: sentences, the look-behind, deny patterns, the Moderator stage (block, redact,
monitor; streamed and whole) and its place among the answer stages. A small hand-weighted model keeps
these tests about the mechanics; tests/unit/test_moderation_model.py holds the shipped model to its
measured quality."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from douane.call import Call
from douane.detect.moderation import (
    CATEGORIES,
    DENY,
    DenyPatternError,
    ModerationDetector,
    ModerationModel,
    compile_deny,
    may_end,
    searcher,
    sentence_end,
    sentences,
)
from douane.gateway import Gateway
from douane.moderation import Moderator
from douane.policy import Policy
from douane.policy.model import ModerationPolicy
from douane.providers import ADAPTERS, ProviderSpec
from douane.providers.sse import SSEFramer
from douane.rewrite import Blocked, OutputGuard, PseudonymRestorer
from douane.streaming import StreamTap, record_findings
from tests.unit.test_streaming import ENDPOINT, char_stream, client_text, run

# violence leans on "stab" and "knife"; "again" leans a little (enough only with context); hate on "vermin"
TINY = ModerationModel(
    name="tiny", prefix=5, bias=dict.fromkeys(CATEGORIES, -4.0),
    weights={"violence": {"stab": 9.0, "knife": 6.0, "again": 2.5, "nice": -2.0}, "hate": {"vermin": 12.0},
             "harassment": {}, "sexual": {}, "self_harm": {}})
HARMFUL = "Grab the knife and stab him."
ALL = dict.fromkeys(CATEGORIES, 0.5)


def detector(*deny: str, max_sentence: int = 400) -> ModerationDetector:
    return ModerationDetector(deny, model=TINY, max_sentence=max_sentence)


def moderator(action: str = "block", *deny: str, max_sentence: int = 400) -> Moderator:
    actions = dict.fromkeys(CATEGORIES, action)
    if deny:
        actions[DENY] = action
    return Moderator(detector(*deny, max_sentence=max_sentence), actions, dict(ALL))


def pushed(stage: Moderator, text: str, pieces: list[int]) -> str:
    out, at = [], 0
    for size in pieces:
        out.append(stage.push(text[at:at + size]))
        at += size
    out.append(stage.push(text[at:]))
    out.append(stage.drain())
    return "".join(out)


def random_pieces(rng: random.Random, n: int) -> list[int]:
    return [rng.randint(1, 9) for _ in range(n)]


# -- sentences -------------------------------------------------------------------------------------


def test_sentences_end_at_stops_before_whitespace_cjk_stops_and_newlines() -> None:
    text = "Pi is 3.14. Really?! Yes... ok\nNext line 好。你好！！再见"
    assert [text[s:e] for s, e in sentences(text)] == [
        "Pi is 3.14.", " Really?!", " Yes...", " ok\n", "Next line 好。", "你好！！", "再见"]


def test_a_stop_at_the_end_of_a_stream_waits_for_the_next_character() -> None:
    assert sentence_end("It ends here.", 0) is None, "a stream may bring '.5' next"
    assert sentence_end("It ends here.", 0, final=True) == len("It ends here.")
    assert sentence_end("It ends here. And", 0) == len("It ends here.")


def test_a_sentence_without_an_end_is_cut_at_a_space_within_the_bound() -> None:
    text = "word " * 100
    end = sentence_end(text, 0, max_len=50)
    assert end is not None and end <= 50 and text[end - 1] == " "
    assert sentence_end("x" * 80, 0, max_len=50) == 50, "no space at all: cut at the bound"


def test_stream_and_whole_text_cut_the_same_sentences() -> None:
    rng = random.Random(7)
    text = "One. Two! Three?\nFour " + "long " * 120 + "end. 五。六！ seven..." + " eight" * 3
    whole = [text[s:e] for s, e in sentences(text, max_len=100)]
    for _ in range(20):
        buf, start, got = "", 0, []
        for size in random_pieces(rng, len(text)):
            if len(buf) >= len(text):
                break
            buf = text[:len(buf) + size]
            while (end := sentence_end(buf, start, max_len=100)) is not None:
                got.append(buf[start:end])
                start = end
        end = sentence_end(buf, start, final=True, max_len=100)
        if end is not None:
            got.append(buf[start:end])
        assert got == whole


def test_may_end_never_skips_a_delta_that_ends_a_sentence() -> None:
    """A stream skips sentence_end for deltas in mid-sentence: exact only if every delta after which a
    sentence can be cut is let through."""
    rng = random.Random(11)
    alphabet = ["a", "b", " ", " ", ".", "!", "?", "…", "。", "\n", "x"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))
        start = rng.choice([0, rng.randrange(0, len(text))])
        known = rng.randrange(start, len(text))
        if sentence_end(text[:known], start, max_len=30) is None and \
                sentence_end(text, start, max_len=30) is not None:
            assert may_end(text, known, max_len=30, start=start), (text, known, start)


# -- the judge and its look-behind ---------------------------------------------------------------


def test_context_makes_a_leaning_sentence_harmful_but_not_an_innocent_one() -> None:
    judge = detector().judge(ALL)
    assert [h.category for h in judge.sentence(HARMFUL)] == ["violence"]
    assert judge.sentence(" Have a nice day.") == [], "a harmful sentence does not drag the next one along"
    judge = detector().judge(ALL)
    judge.sentence(HARMFUL)
    assert [h.category for h in judge.sentence(" Then do it again.")] == ["violence"]
    alone = detector().judge(ALL)
    assert alone.sentence("Then do it again.") == [], "without the context it is harmless"


def test_the_look_behind_is_bounded() -> None:
    judge = ModerationDetector(model=TINY, look_behind=60).judge(ALL)
    judge.sentence(HARMFUL)
    judge.sentence(" This sentence is long enough to push the earlier one out of the window.")
    assert judge.sentence(" Then do it again.") == []


def test_a_category_without_a_threshold_is_not_judged() -> None:
    assert detector().judge({"hate": 0.5}).sentence(HARMFUL) == []


# -- deny patterns ---------------------------------------------------------------------------------


def test_deny_patterns_match_case_insensitively_and_across_a_sentence_boundary() -> None:
    judge = detector(r"\bproject bluebird\b", r"launch code \d+").judge({})
    assert judge.sentence("The weather is fine.") == []
    hits = judge.sentence(" Notes on PROJECT Bluebird follow.")
    assert [(h.category, h.pattern) for h in hits] == [(DENY, 0)]
    judge = detector(r"bluebird\.\s+launch").judge({})
    assert judge.sentence("It is called bluebird.") == []
    assert [h.pattern for h in judge.sentence(" Launch is Monday.")] == [0], "the match ends in this sentence"


def test_the_fast_deny_search_answers_as_re2s_public_search() -> None:
    """could_deny calls RE2's Match on the bytes itself (the wrapper's bookkeeping costs as much as the
    search): it must say yes exactly where the public search finds a match, non-ASCII text included."""
    rng = random.Random(5)
    patterns = [r"\bproject bluebird\b", r"launch code \d{4}", "internal use only", r"caf[eé]\s+noir", "ß+x"]
    alphabet = list("project bluebird launch code 0123 internal use only caf é noir ßx ſ K 日本 ") + ["\n"]
    for pattern in patterns:
        compiled = compile_deny(pattern)
        fast = searcher(compiled)
        for _ in range(400):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
            if rng.random() < 0.3:
                text += rng.choice(["Project Bluebird", "LAUNCH CODE 1234", "Internal Use Only", "CAFÉ  noir", "ßßX"])
            assert fast(text) == (compiled.search(text) is not None), (pattern, text)


def test_deny_patterns_are_re2_and_refuse_what_re2_cannot_do() -> None:
    with pytest.raises(DenyPatternError, match="RE2"):
        compile_deny(r"(a)\1")
    with pytest.raises(DenyPatternError, match="RE2"):
        compile_deny(r"foo(?=bar)")
    with pytest.raises(DenyPatternError, match="empty text"):
        compile_deny(r"x*")
    # a pattern that backtracks exponentially in Python's re is linear in RE2
    assert compile_deny(r"(a+)+b").search("a" * 50_000 + "c") is None


def test_the_policy_refuses_a_bad_deny_pattern_naming_it() -> None:
    with pytest.raises(ValidationError, match=r"deny\[1\]"):
        ModerationPolicy(deny=["ok", r"(a)\1"])
    with pytest.raises(ValidationError):
        ModerationPolicy(categories={"gore": {"action": "block"}})  # type: ignore[dict-item]


# -- the stage -------------------------------------------------------------------------------------


def test_block_raises_before_the_harmful_sentence_leaves() -> None:
    stage = moderator("block")
    sent = stage.push("Here is the plan. ")
    with pytest.raises(Blocked) as b:
        sent += stage.push(HARMFUL + " More text.")
    assert sent == "Here is the plan."
    assert b.value.rule == "moderation.violence" and "violence" in str(b.value)
    assert stage.blocked == "moderation.violence"
    assert [(f.kind, f.name) for f in stage.findings] == [("moderation", "violence")]


def test_redact_replaces_the_sentence_the_same_whatever_the_chunking() -> None:
    text = "Here is the plan. " + HARMFUL + " Have a nice day.\nVermin everywhere. Bye"
    expected = "Here is the plan. <MODERATED:violence> Have a nice day.\n<MODERATED:hate> Bye"
    assert moderator("redact").check(text) == expected
    rng = random.Random(3)
    for _ in range(25):
        assert pushed(moderator("redact"), text, random_pieces(rng, 12)) == expected


def test_redact_holds_only_the_sentence_being_written() -> None:
    stage = moderator("redact", max_sentence=60)
    assert stage.push("Fine. Still writ") == "Fine."
    assert stage.held == " Still writ"
    stage.push("ing " * 40)
    assert len(stage.held) <= 60, "a sentence without an end is judged at the bound"


def test_monitor_holds_nothing_and_records_what_it_saw() -> None:
    stage = moderator("monitor", r"bluebird")
    assert not stage.rewrites
    text = "Hi. " + HARMFUL + " bluebird"
    out = "".join(stage.push(text[i:i + 5]) for i in range(0, len(text), 5))
    assert out == text and stage.held == ""
    assert stage.drain() == ""
    assert sorted(f.name for f in stage.findings) == [DENY, "violence"]
    assert stage.notes() == ["moderation.deny (monitor)", "moderation.violence (monitor)"]


def test_redact_in_json_blocks_instead() -> None:
    stage = moderator("redact")
    with pytest.raises(Blocked, match="cannot be redacted"):
        stage.check(json.dumps({"message": HARMFUL + " Then leave."}))
    streamed = moderator("redact")
    with pytest.raises(Blocked):
        pushed(streamed, json.dumps({"message": "ok. " + HARMFUL + " x"}), [3, 5, 8])


def test_prose_that_opens_with_a_bracket_is_redacted_not_blocked() -> None:
    assert moderator("redact").check("[1] " + HARMFUL + " Bye.") == "<MODERATED:violence> Bye."


def test_whole_texts_do_not_disturb_a_stream_in_progress() -> None:
    stage = moderator("redact")
    first = stage.push(HARMFUL + " Then do")
    assert stage.check("Innocent snapshot.") == "Innocent snapshot."
    assert first + stage.push(" it again. ok") == "<MODERATED:violence> <MODERATED:violence>", \
        "the stream's look-behind still holds the harmful sentence"


def test_an_unquoted_off_in_yaml_turns_a_category_off(tmp_path: Path) -> None:
    from douane.policy import load_policy

    path = tmp_path / "policy.yaml"
    path.write_text("moderation:\n  categories:\n    sexual: {action: off}\n")
    moderation = load_policy(path).moderation
    assert moderation is not None and moderation.categories["sexual"].action == "off"


def test_for_policy_reads_actions_thresholds_and_the_mode() -> None:
    policy = ModerationPolicy(action="redact", threshold=0.7, deny=["x{3}"],
                              categories={"sexual": {"action": "off"}, "hate": {"action": "block", "threshold": 0.2}})
    stage = Moderator.for_policy(detector("x{3}"), policy)
    assert "sexual" not in stage.actions and stage.actions["violence"] == "redact"
    assert stage.actions["hate"] == "block" and stage.thresholds["hate"] == 0.2
    assert stage.thresholds["violence"] == 0.7 and stage.actions[DENY] == "redact"
    watched = Moderator.for_policy(detector("x{3}"), policy, monitor=True)
    assert set(watched.actions.values()) == {"monitor"} and not watched.rewrites


# -- through the stream tap and the answer stages -------------------------------------------------


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_a_stream_is_blocked_mid_way_with_the_provider_error_event(fmt: str) -> None:
    reply = "Sure, here you go. " * 5 + HARMFUL + " Tail text." * 10
    stage = moderator("block")
    tap = StreamTap(ADAPTERS[fmt], ENDPOINT[fmt], None, stages=[stage], audit_after=1)
    out = run(tap, char_stream(fmt, reply, 4), step=9)
    assert tap.blocked is not None and tap.blocked.rule == "moderation.violence"
    assert b"stab" not in out and client_text(fmt, out).startswith("Sure, here you go.")
    last = SSEFramer().feed(out)[-1]
    assert "moderation.violence" in json.dumps(json.loads(last.data or "{}"))


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_a_stream_is_redacted_in_every_format(fmt: str) -> None:
    reply = "Sure. " + HARMFUL + " Have a nice day."
    tap = StreamTap(ADAPTERS[fmt], ENDPOINT[fmt], None, stages=[moderator("redact")], audit_after=1)
    out = run(tap, char_stream(fmt, reply, 3), step=7)
    assert client_text(fmt, out) == "Sure. <MODERATED:violence> Have a nice day."
    assert tap.assembled == client_text(fmt, out), "the audit keeps the text as it left"


def test_the_responses_snapshots_are_moderated_like_the_deltas() -> None:
    text = "Sure. " + HARMFUL
    done = {"type": "response.output_text.done", "item_id": "m", "output_index": 0, "content_index": 0, "text": text}
    events = [("response.output_text.delta", {"type": "response.output_text.delta", "item_id": "m",
                                              "output_index": 0, "content_index": 0, "delta": text}),
              ("response.output_text.done", done)]
    data = b"".join(f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in events)
    stage = moderator("redact")
    tap = StreamTap(ADAPTERS["openai"], "responses", None, stages=[stage], audit_after=1)
    out = run(tap, data, step=11)
    assert b"stab" not in out and out.count(b"<MODERATED:violence>") == 2
    c = call()
    record_findings(c, [stage])
    assert c.output_findings == ["moderation:violence"], "the snapshot's second look is not a second finding"


def call() -> Call:
    return Call(id="dou_x", started=0.0, provider=ProviderSpec("openai", "openai", ("api.openai.com",)),
                host="api.openai.com", method="POST", path="/v1/chat/completions", endpoint="chat.completions")


def test_the_row_reason_leads_with_moderation() -> None:
    c = call()
    c.note("pii.redact: EMAIL_ADDRESS")
    stage = moderator("redact")
    stage.check(HARMFUL)
    record_findings(c, [stage])
    assert c.reasons[0] == "moderation.violence (redact)" and c.output_findings == ["moderation:violence"]
    blocked = call()
    blocked.note("pii.redact: EMAIL_ADDRESS")
    stage = moderator("block")
    with pytest.raises(Blocked):
        stage.check(HARMFUL)
    blocked.decision = "blocked"
    record_findings(blocked, [stage])
    assert blocked.reasons[0] == "moderation.violence"


def gateway(tmp_path: Path, **policy: object) -> Gateway:
    return Gateway(Policy.model_validate(policy), tmp_path / "audit.duckdb")


def test_answer_stages_put_the_moderator_between_the_output_guard_and_the_restorer(tmp_path: Path) -> None:
    gw = gateway(tmp_path, output={"secrets": "redact"}, moderation={"action": "redact", "deny": ["bluebird"]},
                 teams={"open": {"guards": {"moderation": None}},
                        "strict": {"guards": {"moderation": {"action": "block"}}}},
                 clients=[{"name": "a", "team": "open", "key_sha256": "0" * 64},
                          {"name": "b", "team": "strict", "key_sha256": "1" * 64}])
    try:
        stages, audited = gw.answer_stages(gw.policy_guards, {"<EMAIL_ADDRESS_1>": "x@example.com"})
        assert [type(s) for s in stages] == [OutputGuard, Moderator, PseudonymRestorer] and audited == 2
        assert isinstance(stages[1], Moderator) and stages[1].actions[DENY] == "redact"
        open_stages, _ = gw.answer_stages(gw.guard_book.teams["open"], {})
        assert [type(s) for s in open_stages] == [OutputGuard]
        strict, _ = gw.answer_stages(gw.guard_book.teams["strict"], {})
        assert isinstance(strict[1], Moderator) and set(strict[1].actions.values()) == {"block"}
        assert strict[1].detector is stages[1].detector, "one detector per distinct deny list"
    finally:
        gw.writer.close()


def test_monitor_mode_moderates_without_acting(tmp_path: Path) -> None:
    gw = gateway(tmp_path, mode="monitor", moderation={"action": "block"})
    try:
        stages, _ = gw.answer_stages(gw.policy_guards, {})
        assert isinstance(stages[0], Moderator) and not stages[0].rewrites
    finally:
        gw.writer.close()
