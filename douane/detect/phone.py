"""Phone numbers as Presidio's PhoneRecognizer finds them, at a fraction of its cost.

Presidio runs libphonenumber's PhoneNumberMatcher (leniency VALID) once per region. The matcher's
`parse` plus `is_valid_number` cost ~20 us per candidate and region, so a digit run that is no
phone number (an order id near the word "contact") cost ~150 us to reject in eight regions. Here
the matcher's own candidate rules are kept, and the verification of plain candidates (ASCII digits,
spaces, `-`, `.`, `(`, `)` and a leading `+`) is libphonenumber's parse-and-validate path replayed
with its own metadata and helpers, minus what such candidates cannot reach (extensions, letters,
phone-context). Anything else goes to libphonenumber itself. tests/unit/test_phone.py holds the
two to the same answers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata
from phonenumbers import phonenumbermatcher as pm
from phonenumbers import phonenumberutil as pu

# The regions Presidio's PhoneRecognizer tries, in its order.
PRESIDIO_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")

_PLAIN = re.compile(r"\+?[0-9 ().-]+")
_NOT_DIGIT = re.compile(r"\D")
_MIN_NSN, _MAX_NSN = 2, 17
_SHORT = (pu.ValidationResult.TOO_SHORT, pu.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
          pu.ValidationResult.INVALID_LENGTH)
_DEFAULT, _FROM_NUMBER = "default", "from-number"
# How far past a window's end a candidate of the matcher's pattern may reach: leading brackets, 21
# digit blocks of up to 20 digits with up to 4 punctuation characters each, an extension. Reading
# this far lets a candidate that starts inside the window be read whole.
LONGEST = 640


def reference_valid(candidate: str, region: str) -> bool:
    """libphonenumber's own verdict: what the matcher's _parse_and_verify decides after its text checks."""
    try:
        number = phonenumbers.parse(candidate, region, keep_raw_input=True)
    except phonenumbers.NumberParseException:
        return False
    return bool(pm._verify(phonenumbers.Leniency.VALID, number, candidate, pm.PhoneNumberMatcher("", region)))


@functools.cache
def _general_desc(code: int) -> tuple[frozenset[int], re.Pattern[str]] | None:
    """Lengths and pattern that every valid number of a calling code matches, whatever its region."""
    metas = [PhoneMetadata.metadata_for_region_or_calling_code(code, region)
             for region in COUNTRY_CODE_TO_REGION_CODE.get(code, ())]
    descs = [meta.general_desc for meta in metas if meta is not None and meta.general_desc is not None]
    if not descs or len(descs) < len(metas) or any(not d.possible_length or not d.national_number_pattern
                                                   for d in descs):
        return None
    lengths = frozenset(n for d in descs for n in d.possible_length)
    return lengths, re.compile("|".join(f"(?:{d.national_number_pattern})" for d in descs))


def _some_suffix_possible(digits: str, code: int, meta: PhoneMetadata) -> bool:
    """Whether any tail of the digits could be a valid national number of the calling code.

    Written nationally, the national number is the digits less a country code or national prefix
    at the front (the one transform rule of Presidio's regions, Brazil's, keeps a tail too), and
    it must match the general description of its region: most digit runs fail this at once.
    """
    general = _general_desc(code)
    if general is None or (meta.national_prefix_transform_rule and meta.national_prefix_transform_rule != "\\2"):
        return True
    lengths, pattern = general
    return any(pattern.fullmatch(digits, len(digits) - n) for n in lengths if n <= len(digits))


_TYPES = ("fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "voip", "personal_number", "pager",
          "uan", "voicemail")


@functools.cache
def _type_descs(code: int, region: str) -> tuple[tuple[frozenset[int], re.Pattern[str]], ...] | None:
    """The general description, then each number type's, as (possible lengths, compiled pattern)."""
    meta = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
    if meta is None:
        return None
    out = []
    for desc in [meta.general_desc] + [getattr(meta, name) for name in _TYPES]:
        if desc is None or not desc.national_number_pattern:
            out.append((frozenset({-1}), re.compile("(?!)")))  # a missing description matches nothing
        else:
            out.append((frozenset(desc.possible_length) or frozenset(range(_MAX_NSN + 2)),
                        re.compile(desc.national_number_pattern)))
    return tuple(out)


def _known_type(nsn: str, code: int, region: str) -> bool:
    """_number_type_helper(...) != UNKNOWN: the general description and any one type match (the
    helper only decides which type, which validity does not need)."""
    descs = _type_descs(code, region)
    if descs is None:
        return False
    (general_lengths, general), types = descs[0], descs[1:]
    n = len(nsn)
    if n not in general_lengths or not general.fullmatch(nsn):
        return False
    return any(n in lengths and pattern.fullmatch(nsn) for lengths, pattern in types)


def _valid_for_calling_code(code: int, nsn: str) -> bool:
    """is_valid_number for a parsed number: find the region of the calling code, then match its types."""
    regions = COUNTRY_CODE_TO_REGION_CODE.get(code)
    if not regions:
        return False
    general = _general_desc(code)
    if general is not None and (len(nsn) not in general[0] or not general[1].fullmatch(nsn)):
        return False  # _number_type_helper starts with this test, in whichever region is picked
    if len(regions) == 1:
        return _known_type(nsn, code, regions[0])
    for candidate in regions:  # region_code_for_number, then is_valid_number_for_region
        meta = PhoneMetadata.metadata_for_region(candidate, None)
        if meta is None:
            continue
        if meta.leading_digits is not None:
            if re.match(meta.leading_digits, nsn):
                return _known_type(nsn, code, candidate)
        elif _known_type(nsn, code, candidate):
            return True
    return False


@functools.cache
def _prefix_never_required(code: int) -> bool:
    """No format of the calling code's main region needs the national prefix written."""
    meta = PhoneMetadata.metadata_for_region(pu.region_code_for_country_code(code), None)
    return meta is None or all(
        not f.national_prefix_formatting_rule or f.national_prefix_optional_when_formatting
        or pu._formatting_rule_has_first_group_only(f.national_prefix_formatting_rule) for f in meta.number_format)


def _national_prefix_present_if_required(code: int, nsn: str, digits: str) -> bool:
    """The matcher's rule: a number written nationally carries the national prefix where its format needs one."""
    if _prefix_never_required(code):
        return True
    meta = PhoneMetadata.metadata_for_region(pu.region_code_for_country_code(code), None)
    if meta is None:
        return True
    rule = pu._choose_formatting_pattern_for_number(meta.number_format, nsn)
    if rule is None or not rule.national_prefix_formatting_rule or rule.national_prefix_optional_when_formatting:
        return True
    if pu._formatting_rule_has_first_group_only(rule.national_prefix_formatting_rule):
        return True
    return bool(pu._maybe_strip_national_prefix_carrier_code(digits, meta)[2])


@functools.lru_cache(maxsize=4096)
def _plain(candidate: str) -> tuple[bool, bool, str] | None:
    """(viable, written with "+", digits) of a plain candidate, the same in every region; None if not plain."""
    if not _PLAIN.fullmatch(candidate):
        return None
    number = pu._extract_possible_number(candidate)
    return pu._is_viable_phone_number(number), number.startswith("+"), _NOT_DIGIT.sub("", number)


@functools.cache
def _region(region: str) -> tuple[PhoneMetadata | None, re.Pattern[str] | None]:
    meta = PhoneMetadata.metadata_for_region(region, None)
    idd = re.compile(meta.international_prefix) if meta is not None and meta.international_prefix else None
    return meta, idd


def fast_valid(candidate: str, region: str) -> bool | None:
    """reference_valid for plain candidates; None when the candidate needs libphonenumber itself."""
    plain = _plain(candidate)
    meta, idd = _region(region)
    if plain is None or meta is None:
        return None
    viable, international, digits = plain
    if not viable:
        return False
    if international:
        return _valid_international(digits)
    if idd is not None and idd.match(digits) and pu._parse_prefix_as_idd(idd, digits)[0]:
        return None  # "00 44 ..." style: rare, left to libphonenumber
    code, national, source = meta.country_code, digits, _DEFAULT
    if code is None:
        return None
    if not _some_suffix_possible(digits, code, meta):
        return False
    code_str = str(code)
    if digits.startswith(code_str):
        general = meta.general_desc
        potential = pu._maybe_strip_national_prefix_carrier_code(digits[len(code_str):], meta)[1]
        better = (not pu._match_national_number(digits, general, False)
                  and pu._match_national_number(potential, general, False))
        if better or pu._test_number_length(digits, meta) == pu.ValidationResult.TOO_LONG:
            national, source = potential, _FROM_NUMBER
            meta = PhoneMetadata.metadata_for_region_or_calling_code(code, pu.region_code_for_country_code(code))
            if meta is None:
                return None
    nsn = _strip_national_prefix(national, meta)
    if nsn is None or not _valid_for_calling_code(code, nsn):
        return False
    return source != _DEFAULT or _national_prefix_present_if_required(code, nsn, digits)


def _valid_international(digits: str) -> bool | None:
    if len(digits) <= _MIN_NSN:
        return False
    code, rest = pu._extract_country_code(digits)
    if code == 0:
        return None  # the matcher retries without the "+": rare, left to libphonenumber
    meta = PhoneMetadata.metadata_for_region_or_calling_code(code, pu.region_code_for_country_code(code))
    if meta is None:
        return None
    nsn = _strip_national_prefix(rest, meta)
    return nsn is not None and _valid_for_calling_code(code, nsn)


def _strip_national_prefix(national: str, meta: PhoneMetadata) -> str | None:
    """parse(): drop a national prefix when what remains has a possible length; None when too short or long."""
    if len(national) < _MIN_NSN:
        return None
    potential = pu._maybe_strip_national_prefix_carrier_code(national, meta)[1]
    if pu._test_number_length(potential, meta) not in _SHORT:
        national = potential
    if not _MIN_NSN <= len(national) <= _MAX_NSN or not national.strip("0"):
        return None
    return national


@functools.lru_cache(maxsize=4096)
def _valid(candidate: str, region: str) -> bool:
    fast = fast_valid(candidate, region)
    return reference_valid(candidate, region) if fast is None else fast


def _trim(pattern: re.Pattern[str], candidate: str) -> str:
    m = pattern.search(candidate)
    return candidate[:m.start()] if m else candidate


def _text_ok(text: str, candidate: str, offset: int) -> bool:
    """The region-free half of PhoneNumberMatcher._parse_and_verify at leniency VALID."""
    end = offset + len(candidate)
    return _text_ok_between(candidate, text[offset - 1] if offset > 0 else "", text[end] if end < len(text) else "")


@functools.lru_cache(maxsize=1024)  # first_region_matches asks twice for the region that matches
def _text_ok_between(candidate: str, before: str, after: str) -> bool:
    """_text_ok from the candidate and its neighbours alone (so the cache never holds a whole text)."""
    if not pm._MATCHING_BRACKETS.fullmatch(candidate) or pm._PUB_PAGES.search(candidate):
        return False
    if before and not pm._LEAD_PATTERN.match(candidate) and _bad_neighbour(before):
        return False
    return not after or not _bad_neighbour(after)


def _bad_neighbour(char: str) -> bool:
    """A Latin letter, "%" or a currency symbol (the matcher's test; for ASCII: a letter, "%" or "$")."""
    if char.isascii():
        return char.isalpha() or char in "%$"
    matcher = pm.PhoneNumberMatcher
    return bool(matcher._is_invalid_punctuation_symbol(char) or matcher._is_latin_letter(char))


def _tries(text: str, candidate: str, offset: int) -> Iterator[tuple[str, int]]:
    """What PhoneNumberMatcher._extract_match tries to parse, in its order: the candidate, then inner groups."""
    if pm._SLASH_SEPARATED_DATES.search(candidate):
        return
    if pm._TIME_STAMPS.search(candidate) and pm._TIME_STAMPS_SUFFIX.match(text, offset + len(candidate)):
        return
    yield candidate, offset
    for inner in pm._INNER_MATCHES:
        group_match = inner.search(candidate)
        first = True
        while group_match:
            if first:
                yield _trim(pu._UNWANTED_END_CHAR_PATTERN, candidate[:group_match.start()]), offset
                first = False
            yield _trim(pu._UNWANTED_END_CHAR_PATTERN, group_match.group(1)), offset + group_match.start(1)
            group_match = inner.search(candidate, group_match.start() + 1)


def _next_candidate(text: str, index: int, stop: int) -> tuple[int, str] | None:
    """The matcher's next candidate from `index` if it starts before `stop`: (offset, candidate), read
    whole (up to LONGEST past `stop`) and trimmed at a second number."""
    m = pm._PATTERN.search(text, index, min(len(text), stop + LONGEST))
    if m is None or m.start() >= stop:
        return None
    return m.start(), _trim(pu._SECOND_NUMBER_START_PATTERN, m.group())


def matches(text: str, region: str, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
    """PhoneNumberMatcher(text, region, leniency=VALID): the spans it would yield, of the candidates
    that start in [start, end) (the text around is read as it is)."""
    index, stop = start, len(text) if end is None else end
    while (found := _next_candidate(text, index, stop)) is not None:
        offset, candidate = found
        index = offset + len(candidate)
        for value, at in _tries(text, candidate, offset):
            if _text_ok(text, value, at) and _valid(value, region):
                yield at, at + len(value)
                index = at + len(value)
                break


Walk = list[tuple[int, str, list[str]]]


def walk(text: str, start: int = 0, end: int | None = None) -> Walk:
    """The matcher's candidates that start in [start, end), each with the values it would parse in a
    region where nothing matches (the same in every region): (offset, candidate, values)."""
    out = []
    index, stop = start, len(text) if end is None else end
    while (found := _next_candidate(text, index, stop)) is not None:
        offset, candidate = found
        index = offset + len(candidate)
        values = [value for value, at in _tries(text, candidate, offset) if _text_ok(text, value, at)]
        out.append((offset, candidate, values))
    return out


def first_region_matches(text: str, regions: Sequence[str] = PRESIDIO_REGIONS, start: int = 0,
                         end: int | None = None, walked: Walk | None = None) -> list[tuple[int, int]]:
    """The matches of the first region that has any, as douane's phone recognizer has always read a
    window: [start, end) of the text, its neighbours seen as they are.

    A region's walk differs from the no-match walk only after its first match, so a region has
    matches exactly when one of the no-match values is valid there: the text checks run once, not
    once per region, and only a region that matches is walked again. `walked`: walk(text, start,
    end), when the caller has it.
    """
    tries = [value for _, _, values in (walk(text, start, end) if walked is None else walked) for value in values]
    for region in regions:
        if any(_valid(value, region) for value in tries):
            return list(matches(text, region, start, end))
    return []


_GROUP_BREAKS = re.compile(r"\s*-\s*|\s+")
_TRIMMED_LONGEST = 48  # characters: a number and a few groups after it (a longer run is no such thing)


def trimmed_matches(text: str, regions: Sequence[str] = PRESIDIO_REGIONS, start: int = 0, end: int | None = None,
                    walked: Walk | None = None, most: int = 3) -> list[tuple[int, int]]:
    """Numbers the matcher misses because more digits follow them in its candidate ("+44 20 7946 0958
    1234", "212-555-0143-99": its inner matches only split off the first group). douane's own
    addition, beside libphonenumber's answers: for each candidate of at most _TRIMMED_LONGEST
    characters in which no region finds anything, the candidate less its last one to `most` groups
    (after a space or a hyphen), longest first, where a region finds it valid and it keeps at least
    seven digits."""
    out = []
    for offset, candidate, values in walk(text, start, end) if walked is None else walked:
        if len(candidate) > _TRIMMED_LONGEST or not values:
            continue  # a long run of digit groups, or a date or time the matcher skips
        cuts = [m.start() for m in _GROUP_BREAKS.finditer(candidate)][::-1][:most]  # longest first
        cuts = [cut for cut in cuts if len(_NOT_DIGIT.sub("", candidate[:cut])) >= 7]
        if not cuts or any(_valid(value, region) for value in values for region in regions):
            continue  # nothing to cut, or a candidate the matcher reads itself
        for cut in cuts:
            prefix = candidate[:cut]
            if _text_ok(text, prefix, offset) and any(_valid(prefix, region) for region in regions):
                out.append((offset, offset + len(prefix)))
                break
    return out
