"""Prompt-injection detection: a scored rule set over normalised text.

Normalisation defeats the usual disguises before any rule runs: Unicode compatibility forms and
confusable letters (Cyrillic/Greek look-alikes), zero-width and other invisible characters,
leetspeak, letter-spaced words ("i g n o r e"), and base64 chunks (decoded and scanned too).
Each rule that fires adds evidence (noisy-OR of its weight); text that talks *about* prompt
injection (asks what it is, how to defend) is damped, so the topic is not mistaken for the act.
The indirect-injection rules (notes addressed to "the AI" inside documents and tool results) run
on every text: retrieved documents often arrive inside user messages.
Measured on tests/data (scripts/eval_injection.py): see BENCHMARKS.md.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from douane.detect import budget
from douane.detect.cache import TextCache
from douane.detect.injection_model import InjectionModel, default_model

_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e"
                        "\u2060-\u206f\u3164\ufeff\uffa0\U000e0000-\U000e007f]")
_CONFUSABLES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ɡ": "g", "һ": "h", "ӏ": "l", "ԛ": "q",
    "ԝ": "w", "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "ѡ": "w", "ɑ": "a", "ı": "i", "ȷ": "j",
})
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i",
                       "|": "l", "+": "t"})
_SPACED = re.compile(r"\b(?:[a-z][ .\-_*]){3,}[a-z]\b")
_B64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")

_NOUNS = (r"(?:instructions?|rules?|directions?|guidelines?|guidance|prompts?|context|constraints?|polic(?:y|ies)"
          r"|programming|directives?|restrictions?|safeguards?|training|orders|commands?|system message)")
_ALL = r"(?:all|any|every|each|the|your|my|these|those|previous|prior|above|earlier|preceding|foregoing|initial|" \
       r"original|system|developer|safety|content|openai|anthropic|google)"

# A markdown image whose address carries data: ![alt](https://host/path?data)
_IMAGE_LINK = r"!\[[^\]]*\]\(\s*https?://[^)\s]*[?&=][^)\s]*\)"

# (rule, weight, pattern) over the normalised text. Weights are evidence, combined by noisy-OR.
RULES: list[tuple[str, float, str]] = [
    ("override", 0.9, rf"\b(?:ignore|disregard|forget|override|bypass|skip|drop|abandon|discard|neglect)\b"
                      rf"(?:\s+\w+){{0,3}}?\s+{_ALL}(?:\s+\w+){{0,3}}?\s+{_NOUNS}"),
    ("override", 0.75, rf"\b(?:do not|don't|dont|never|stop)\s+(?:follow(?:ing)?|obey(?:ing)?|listen(?:ing)? to|"
                       rf"comply(?:ing)? with|adhering to|adhere to)"
                       rf"(?:\s+\w+){{0,3}}\s+{_NOUNS}"),
    ("override", 0.7, r"\b(?:new|updated|real|actual|true|secret|hidden|revised)\s+(?:instructions?|rules|"
                      r"system prompt|directives?|orders)\s*(?::|follow|are|is)"),
    ("override", 0.45, r"\bfrom now on\b.{0,60}\b(?:you (?:will|must|are|shall)|respond|answer|act|ignore|only)"),
    ("override", 0.6, r"\b(?:instead|rather),? (?:you (?:must|will|should)|do (?:the following|this))\b"),
    ("persona", 0.9, r"\b(?:dan|do anything now|stan|dude|aim|jailbreak(?:ed)?|evil ?bot|developer mode|god mode|"
                     r"sudo mode|unrestricted mode|dev mode)\b.{0,120}\b(?:enabled|activated|output|responses?|"
                     r"you (?:will|are|must|can)|respond as|answer as|"
                     r"without (?:any )?(?:restrictions|limits|rules))\b"),
    ("persona", 0.8, r"\bdo anything now\b|\b(?:role|persona|character) of (?:\w+\s+){0,4}(?:known as |called )?"
                     r"(?:dan|stan|dude|aim|evil ?bot)\b"),
    ("persona", 0.8, r"\b(?:you are|you're|act as|pretend (?:to be|you are)|roleplay as|role-play as|become|"
                     r"behave like|simulate)\b.{0,80}\b(?:no|without|free (?:of|from)|not bound by|unbound by|"
                     r"ignores?|beyond)\b.{0,20}\b(?:restrictions?|limitations?|limits|filters?|guidelines|rules|"
                     r"censorship|ethics|morals|policies|constraints|boundaries)"),
    ("persona", 0.6, r"\b(?:unfiltered|uncensored|unrestricted|amoral|unethical|jailbroken)\b.{0,60}"
                     r"\b(?:ai|assistant|model|chatbot|version|mode|response|answers?)\b"),
    ("persona", 0.5, r"\b(?:stay in character|never break character|two responses|dual responses?|"
                     r"\[?(?:classic|jailbreak)\]?\s*(?:response|:))"),
    ("extraction", 0.85, r"\b(?:reveal|show|print|output|repeat|display|dump|leak|disclose|give me|tell me|share|"
                         r"recite|write out|spell out)\b(?:\s+\w+){0,4}\s+(?:system prompt|system message|initial "
                         r"(?:prompt|instructions)|hidden (?:prompt|instructions)|your (?:prompt|instructions|rules|"
                         r"guidelines|configuration)|the (?:prompt|instructions) (?:above|you)|(?:pre-?prompt)|"
                         r"instructions (?:above|you were given))"),
    ("extraction", 0.75, r"\b(?:repeat|print|output|copy)\b.{0,30}\b(?:everything|all|the (?:text|words|content))"
                         r"\b.{0,30}\b(?:above|before|preceding|so far|verbatim)"),
    ("extraction", 0.6, r"\bwhat (?:is|are|were) (?:your|the) (?:system prompt|initial instructions|hidden "
                        r"instructions|original instructions)"),
    ("delimiter", 0.8, r"(?:^|\n)\s*(?:#{1,4}\s*)?(?:system|developer|admin(?:istrator)?|root)\s*(?:prompt|"
                       r"message|override|instruction)?\s*:\s*\S"),
    ("delimiter", 0.85, r"<\|?(?:im_start|im_end|system|endoftext|eot_id|start_header_id)\|?>|\[/?inst\]|"
                        r"<</?sys>>|</?system>|\[system\]|</s>"),
    ("delimiter", 0.7, r"\b(?:end of (?:context|input|document|user input|prompt)|begin (?:new|system) "
                       r"(?:instructions|prompt))\b|(?:---|===|\*\*\*)\s*(?:new|system|admin)\s+"
                       r"(?:instructions|prompt|message)"),
    ("exfiltration", 0.85, _IMAGE_LINK),
    ("exfiltration", 0.75, r"\b(?:send|post|upload|forward|transmit|exfiltrate|leak|email|submit)\b.{0,60}"
                           r"\b(?:conversation|chat history|user(?:'s)? data|personal data|credentials|api keys?|"
                           r"passwords?|secrets?|tokens?|system prompt|messages|this data|the data|everything)\b"
                           r".{0,60}(?:https?://|\bto (?:this|my|the following) (?:url|address|server|endpoint|email)"
                           r"|@[a-z0-9-]+\.)"),
    ("exfiltration", 0.6, r"\b(?:curl|wget|fetch|requests\.(?:get|post))\b.{0,40}https?://\S+.{0,60}\b(?:key|token|"
                          r"secret|password|history|conversation)"),
    ("indirect", 0.75, r"\b(?:note|message|instruction|attention|important)\s+(?:to|for)\s+(?:the\s+)?(?:ai|assistant|"
                       r"llm|language model|chatbot|model|agent)\b"),
    ("indirect", 0.7, r"\b(?:ai|assistant|llm|language model|chatbot|agent)s?\b.{0,30}\b(?:reading|processing|"
                      r"summari[sz]ing) this\b.{0,60}\b(?:must|should|will|need to|are instructed)"),
    ("indirect", 0.55, r"\bwhen (?:you|the (?:ai|assistant|model)) (?:read|see|process|summari[sz]e) this\b"),
]
_TOPIC = re.compile(r"\b(?:what is|what are|explain|how (?:do|does|can|to)|defend|detect|prevent|mitigate|protect|"
                    r"examples? of|classify|research|paper|article|blog|course|training on)\b.{0,80}\b(?:prompt "
                    r"injection|jailbreak)")
_QUOTED_EXAMPLE = re.compile(r"\b(?:for example|e\.g\.|such as|e\.g|the phrase|the sentence)\b\s*[\"'“‘]|"
                             r"[\"'“‘][^\"'”’]{3,80}[\"'”’]\s+(?:attacks?|prompts?|techniques?|exploits?|jailbreaks?)\b")

# Cheap triggers per rule: groups of words (or substrings), each group needed somewhere in the view
# (a group is satisfied by any one of its entries). The full pattern runs only when every group is,
# so most text runs none. Views are lower case.
_NOUN_WORDS = ("instruction", "instructions", "rule", "rules", "direction", "directions", "guideline", "guidelines",
               "guidance", "prompt", "prompts", "context", "constraint", "constraints", "policy", "policies",
               "programming", "directive", "directives", "restriction", "restrictions", "safeguard", "safeguards",
               "training", "orders", "command", "commands", "message")
_AI_WORDS = ("ai", "assistant", "assistants", "llm", "model", "chatbot", "agent", "agents", "language")
_TRIGGERS: list[tuple[tuple[str, ...], ...]] = [
    (("ignore", "disregard", "forget", "override", "bypass", "skip", "drop", "abandon", "discard", "neglect"),
     _NOUN_WORDS),
    (("not", "don't", "dont", "never", "stop"), ("follow", "following", "obey", "obeying", "listen", "listening",
                                                  "comply", "complying", "adhere", "adhering")),
    (("instruction", "instructions", "rules", "prompt", "directive", "directives", "orders"),
     ("new", "updated", "real", "actual", "true", "secret", "hidden", "revised")),
    (("now",), ("from",)),
    (("instead", "rather"), ("you", "do")),
    (("dan", "anything", "stan", "dude", "aim", "jailbreak", "jailbroken", "evil", "evilbot", "developer", "god",
      "sudo", "unrestricted", "dev"),
     ("enabled", "activated", "output", "response", "responses", "you", "respond", "answer", "without")),
    (("anything", "role", "persona", "character"),),
    (("restrictions", "restriction", "limitations", "limitation", "limits", "filters", "filter", "guidelines",
      "rules", "censorship", "ethics", "morals", "policies", "constraints", "boundaries"),
     ("you", "you're", "act", "pretend", "roleplay", "role-play", "become", "behave", "simulate")),
    (("unfiltered", "uncensored", "unrestricted", "amoral", "unethical", "jailbroken"),),
    (("character", "responses", "response", "classic", "jailbreak"),),
    (("reveal", "show", "print", "output", "repeat", "display", "dump", "leak", "disclose", "give", "tell", "share",
      "recite", "write", "spell"),
     ("prompt", "instructions", "rules", "guidelines", "configuration", "preprompt", "pre", "message")),
    (("repeat", "print", "output", "copy"), ("above", "before", "preceding", "far", "verbatim")),
    (("what",), ("system", "initial", "hidden", "original")),
    (("system", "developer", "admin", "administrator", "root"), (":",)),
    (("<|", "[inst", "[/inst", "<<sys", "<system", "</system", "[system]", "</s>", "|>"),),
    (("end", "begin", "new", "---", "===", "***"), ("context", "input", "document", "prompt", "instructions",
                                                    "system", "admin", "message")),
    (("![",),),
    (("send", "post", "upload", "forward", "transmit", "exfiltrate", "leak", "email", "submit"),
     ("conversation", "history", "data", "credentials", "keys", "key", "passwords", "password", "secrets",
      "secret", "tokens", "token", "prompt", "messages", "everything"), ("://", "@", "url", "address", "server",
                                                                           "endpoint")),
    (("curl", "wget", "fetch", "requests"), ("://",)),
    (("note", "message", "instruction", "attention", "important"), _AI_WORDS),
    (("reading", "processing", "summarizing", "summarising"), _AI_WORDS),
    (("when",), ("read", "see", "process", "summarize", "summarise")),
]
assert len(_TRIGGERS) == len(RULES)
# Tokens are maximal runs of a-z, read off bytes in C (translate, split): ~10x cheaper than a regex
# pass. A trigger entry that is such a word is looked up among the tokens; any other entry ("don't",
# "://", "<|") is looked for as a substring of the view.
_LETTERS = bytes(c if 97 <= c <= 122 else 32 for c in range(256))
_LEET_MASK = bytes(97 if 97 <= c <= 122 else 49 if chr(c) in "0134579@$!|+" else 32 for c in range(256))
_B64_RUN = bytes(120 if chr(c).isascii() and (chr(c).isalnum() or chr(c) in "+/") else 32 for c in range(256))
_SPACED_SHAPE = bytes(76 if 97 <= c <= 122 else 83 if chr(c) in " .-_*" else 79 for c in range(256))


def _tokens(view: str) -> set[bytes]:
    return set(view.encode("ascii", "replace").translate(_LETTERS).split())


def _group(entries: tuple[str, ...]) -> tuple[frozenset[bytes], tuple[str, ...]]:
    words = frozenset(e.encode() for e in entries if e.isascii() and e.isalpha() and e.islower())
    return words, tuple(e for e in entries if e.encode() not in words)


class _ImageLinks:
    """_IMAGE_LINK found in one pass. The pattern, tried at every "![", reads to the end of the
    address from each: quadratic on "![x](http://![x](http://...", whose address runs on over the
    next ones. Here each address is read once and every "](http" inside it shares its verdict; the
    alt text is the stretch after the previous "]". tests/unit/test_injection.py holds the two to
    each other."""

    _TARGET = re.compile(r"\]\(\s*https?://", re.IGNORECASE)
    _ADDRESS_END = re.compile(r"[)\s]")

    def search(self, view: str) -> bool:
        address_end = with_data = -1  # the address being read: where it ends, its last "?", "&" or "="
        for m in self._TARGET.finditer(view):
            bracket, address = m.span()
            if address > address_end:
                end = self._ADDRESS_END.search(view, address)
                address_end = end.start() if end is not None else len(view)
                with_data = max(view.rfind(c, address, address_end) for c in "?&=")
            if with_data >= address and view[address_end:address_end + 1] == ")" \
                    and view.find("![", view.rfind("]", 0, bracket) + 1, bracket) != -1:
                return True
        return False


def _compiled(pattern: str) -> re.Pattern[str] | _ImageLinks:
    return _ImageLinks() if pattern == _IMAGE_LINK else re.compile(pattern, re.IGNORECASE | re.DOTALL)


_COMPILED = [(name, weight, _compiled(p)) for name, weight, p in RULES]
# Each rule's trigger groups as bits: which words set which (rule, bit), which bits can also be
# met by a substring, and those substrings.
_WORD_INDEX: dict[bytes, list[tuple[int, int]]] = {}
_FULL: list[int] = []
_MARKABLE: list[int] = []
# per rule: (group bit, the group's substrings by first character: one fast scan per character)
_MARKS: list[list[tuple[int, tuple[tuple[str, tuple[str, ...]], ...]]]] = []
for _rule, _trigger in enumerate(_TRIGGERS):
    _FULL.append((1 << len(_trigger)) - 1)
    _MARKABLE.append(0)
    _MARKS.append([])
    for _bit, (_words, _marks) in ((1 << i, _group(g)) for i, g in enumerate(_trigger)):
        for _w in _words:
            _WORD_INDEX.setdefault(_w, []).append((_rule, _bit))
        if _marks:
            _MARKABLE[_rule] |= _bit
            _firsts = dict.fromkeys(m[0] for m in _marks)
            _MARKS[_rule].append((_bit, tuple((c, tuple(m for m in _marks if m[0] == c)) for c in _firsts)))
_TRIGGER_WORDS = frozenset(_WORD_INDEX)


def _touched_words(raw: bytes, mask: bytes) -> Iterator[bytes]:
    """The letter runs of the base view that end right before, or start right after, a leet character."""
    i = mask.find(b"a1")
    while i != -1:  # the run ends at i: it starts after the nearest "1" or space before (looked for no further)
        one = mask.rfind(b"1", 0, i)
        yield raw[max(one, mask.rfind(b" ", one + 1, i)) + 1:i + 1]
        i = mask.find(b"a1", i + 1)
    i = mask.find(b"1a")
    while i != -1:  # the run starts after i: it ends at the nearest "1" or space after (looked for no further)
        one = mask.find(b"1", i + 1)
        stop = len(mask) if one == -1 else one
        space = mask.find(b" ", i + 1, stop)
        yield raw[i + 1:stop if space == -1 else space]
        i = mask.find(b"1a", i + 1)


def _marks_met(rule: int, need: int, view: str) -> bool:
    """The rule's trigger groups its words did not meet are met by substrings of the view."""
    return all(not need & bit or any(first in view and any(m in view for m in marks) for first, marks in groups)
               for bit, groups in _MARKS[rule])


@dataclass(frozen=True)
class Verdict:
    score: float
    rules: tuple[str, ...]  # names of the rules that fired, strongest first

    @property
    def rule(self) -> str | None:
        return self.rules[0] if self.rules else None


def _collapse_whitespace(text: str) -> str:
    """re.sub(r"\\s+", " ", text), skipped when there is nothing to collapse (the usual case)."""
    if text.isprintable() and "  " not in text:
        return text  # no whitespace but single ASCII spaces: isprintable is False for every other kind
    out = " ".join(text.split())
    if out and text[0].isspace():
        out = " " + out
    if out and text[-1].isspace():
        out += " "
    return out or (" " if text else "")


def views(text: str) -> list[str]:
    """The text as a reader would see it past the disguises; several views, scanned together."""
    base, leet, others = _views(text)
    return [base, *([leet] if leet != base else []), *others]


def _base_view(text: str) -> str:
    """Lower case, past compatibility forms, invisible characters and confusables, whitespace collapsed."""
    if text.isascii():  # none of those to undo
        return _collapse_whitespace(text.lower())
    base = unicodedata.normalize("NFKC", text)
    return _collapse_whitespace(_INVISIBLE.sub("", base).translate(_CONFUSABLES).lower())


def _views(text: str) -> tuple[str, str, list[str]]:
    """(base view, leetspeak read as letters, letter-spaced words joined and base64 decoded)."""
    budget.charge(len(text))
    base = _base_view(text)
    budget.charge(len(base))
    leet = base.translate(_LEET)
    others = []
    # a letter-spaced word needs four letters with separators between: look for that shape first
    budget.charge(len(leet))
    if b"LSLSLSL" in leet.encode("ascii", "replace").translate(_SPACED_SHAPE):
        despaced = _SPACED.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group()), leet)
        if despaced != leet:
            others.append(despaced)
    budget.charge(len(text))
    if b"x" * 16 in text.encode("ascii", "replace").translate(_B64_RUN):
        others += _decoded_views(text)
    return base, leet, others


def _gate_hits(base: str, leet: str, others: list[str]) -> list[int]:
    """Trigger hits from the words of every view at once: a gate for each view that is never narrower
    than its own words would give (the rule's pattern, run on the view itself, decides).

    The leetspeak view has every word of the base view but those a leet character touches
    ("ignore" in "1gnore" or "ignore1"): those few are added from the base view.
    """
    budget.charge(len(leet) + sum(map(len, others)))
    tokens = _tokens(leet)
    if leet != base:
        raw = base.encode("ascii", "replace")
        mask = raw.translate(_LEET_MASK)  # a: letter, 1: leet character, space: anything else
        tokens.update(_touched_words(raw, mask))
    for view in others:
        tokens |= _tokens(view)
    hits = [0] * len(_COMPILED)
    for word in tokens & _TRIGGER_WORDS:
        for rule, bit in _WORD_INDEX[word]:
            hits[rule] |= bit
    return hits


def _decoded_views(text: str) -> list[str]:
    out = []
    for chunk in _B64.findall(text):
        try:
            decoded = base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if sum(c.isprintable() or c.isspace() for c in decoded) / max(1, len(decoded)) > 0.9:
            out.append(_base_view(decoded))
    return out


NO_EVIDENCE = Verdict(0.0, ())


class InjectionDetector:
    def __init__(self, cache_size: int = 8192, model: InjectionModel | None | bool = False):
        """`model`: the learned tier (True: the shipped artifact; False or None: rules alone)."""
        self._cache: TextCache[Verdict] = TextCache(cache_size)
        self._model = default_model() if model is True else model or None

    def lookup(self, text: str) -> Verdict | None:
        """The verdict on a text scored before; None when it needs scoring."""
        return self._cache.get(text) if text and not text.isspace() else NO_EVIDENCE

    def score(self, text: str) -> Verdict:
        """Evidence of injection in one text, 0 to 1, with the rules that fired."""
        if not text or text.isspace():
            return NO_EVIDENCE
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        verdict = self._score(text)
        if self._model is not None:
            verdict = with_model(verdict, self._model, self._model.score(_base_view(text)))
        self._cache.put(text, verdict)
        return verdict

    @staticmethod
    def _score(text: str) -> Verdict:
        fired: dict[str, float] = {}
        base, leet, others = _views(text)
        seen = [base, *([leet] if leet != base else []), *others]
        hits = _gate_hits(base, leet, others)
        for rule, (name, weight, regex) in enumerate(_COMPILED):
            if weight <= fired.get(name, 0.0):
                continue
            need = _FULL[rule] & ~hits[rule]  # trigger groups no word met
            if need & ~_MARKABLE[rule]:
                continue  # one of them has no substring to meet it either: the pattern cannot match
            for view in seen:
                budget.charge(len(view))
                if (not need or _marks_met(rule, need, view)) and regex.search(view):
                    fired[name] = weight
                    break
        if not fired:
            return Verdict(0.0, ())
        miss = 1.0
        for weight in fired.values():
            miss *= 1.0 - weight
        score = 1.0 - miss
        budget.charge(len(base))
        if _TOPIC.search(base) or _QUOTED_EXAMPLE.search(base):
            score *= 0.45  # talking about injection, or quoting an example, is not doing it
        rules = tuple(sorted(fired, key=lambda n: -fired[n]))
        return Verdict(round(score, 4), rules)


# --- The learned tier (douane/detect/injection_model.py) ---------------------------------------------
# The rules explain the phrasings they name; the model catches paraphrases, other languages and
# persona jailbreaks. The score is the stronger of the two. A rule that fires (>= 0.5) keeps the
# explanation (its name first); the model ("model:injection-v1") comes first when it decided alone.
# Below NOISE the model says nothing, so ordinary rows keep score 0 and no rule.
FIRES = 0.5
NOISE = 0.1


def with_model(rules: Verdict, model: InjectionModel, probability: float) -> Verdict:
    """The rules' verdict with the model's probability of injection folded in."""
    if probability < NOISE or (probability < FIRES and probability <= rules.score):
        return rules
    name = f"model:{model.name}"
    score = round(max(rules.score, probability), 4)
    if rules.score >= FIRES or probability < rules.score:
        return Verdict(score, (*rules.rules, name))
    return Verdict(score, (name, *rules.rules))
