"""douane's phone finder against libphonenumber's own PhoneNumberMatcher, the reference it replays."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import Leniency, PhoneNumberFormat, PhoneNumberMatcher, PhoneNumberType

from douane.detect import phone

SEPARATORS = [" ", "-", ".", "", "  ", " - ", "(", ")", "/"]
FORMATS = [PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.NATIONAL,
           PhoneNumberFormat.RFC3966]
CONTEXTS = ["call {} now", "{}", "id {}, ok", "ref:{}.", "tel ({}) x", "phone {}/5", "+{}", "00{} or",
            "user{}@x.io"]


def candidate(rng: random.Random) -> str:
    """Real numbers of every region in every format, some with digits changed, and digit soup."""
    if rng.random() < 0.4:
        region = rng.choice(sorted(phonenumbers.SUPPORTED_REGIONS))
        kind = rng.choice([PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.TOLL_FREE])
        number = phonenumbers.example_number_for_type(region, kind)
        if number is None:
            return "12345"
        text = phonenumbers.format_number(number, rng.choice(FORMATS))
        if rng.random() < 0.5:
            text = "".join(str(rng.randrange(10)) if c.isdigit() and rng.random() < 0.2 else c for c in text)
        return text
    out = "0" if rng.random() < 0.2 else ""
    for _ in range(rng.randint(3, 16)):
        out += str(rng.randrange(10)) + (rng.choice(SEPARATORS) if rng.random() < 0.25 else "")
    return out


@pytest.mark.parametrize("seed", range(4))
def test_matches_are_libphonenumbers(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(250):
        text = rng.choice(CONTEXTS).format(candidate(rng))
        for region in phone.PRESIDIO_REGIONS:
            expected = [(m.start, m.end) for m in PhoneNumberMatcher(text, region, leniency=Leniency.VALID)]
            assert list(phone.matches(text, region)) == expected, (text, region)


def test_first_region_matches_is_the_first_region_with_any() -> None:
    rng = random.Random(9)
    for _ in range(300):
        text = rng.choice(CONTEXTS).format(candidate(rng))
        expected: list[tuple[int, int]] = []
        for region in phone.PRESIDIO_REGIONS:
            expected = [(m.start, m.end) for m in PhoneNumberMatcher(text, region, leniency=Leniency.VALID)]
            if expected:
                break
        assert phone.first_region_matches(text) == expected, text


def test_fast_path_agrees_with_parse_and_validate() -> None:
    rng = random.Random(5)
    checked = 0
    for _ in range(1500):
        value = candidate(rng)
        for region in phone.PRESIDIO_REGIONS:
            fast = phone.fast_valid(value, region)
            if fast is not None:
                checked += 1
                assert fast == phone.reference_valid(value, region), (value, region)
    assert checked > 5000, "the fast path must cover the usual shapes"


@pytest.mark.parametrize("text, region, found", [
    ("call 212-555-0143 now", "US", True),
    ("call +44 20 7946 0958 now", "US", True),
    ("call 020 7946 0958 now", "GB", True),
    ("order 2023-10-12 shipped", "DE", False),
    ("build 3.123456 released", "US", False),
])
def test_known_numbers(text: str, region: str, found: bool) -> None:
    assert bool(list(phone.matches(text, region))) is found
