"""A labelled PII corpus, generated from a seed: prompts with planted values of each entity, and
benign prompts full of look-alikes (order ids, versions, hashes, prices, dates, code).

Used by scripts/bench-pii and tests/unit/test_pii_corpus.py. Nothing is downloaded.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

FIRST = ["jane", "omar", "li", "sofia", "kwame", "anna", "raj", "lucia", "tomas", "mei", "noah", "fatima"]
LAST = ["roe", "haddad", "wang", "rossi", "mensah", "novak", "patel", "garcia", "berg", "chen", "smith", "ali"]
DOMAINS = ["example.com", "corp.example.org", "mail.example.net", "acme.co.uk", "example.de", "startup.io"]


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    digits = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return digits + str((10 - total % 10) % 10)


def group(number: str, sizes: list[int], sep: str) -> str:
    out, i = [], 0
    for size in sizes:
        out.append(number[i:i + size])
        i += size
    if i < len(number):
        out.append(number[i:])
    return sep.join(out)


def card(rng: random.Random) -> str:
    kind = rng.choice(["visa16", "visa19", "mc5", "mc2", "amex", "discover"])
    if kind == "visa16":
        n = luhn_complete("4", 16, rng)
    elif kind == "visa19":
        n = luhn_complete("4", 19, rng)
    elif kind == "mc5":
        n = luhn_complete(str(rng.randint(51, 55)), 16, rng)
    elif kind == "mc2":
        n = luhn_complete(str(rng.randint(2221, 2720)), 16, rng)
    elif kind == "amex":
        n = luhn_complete(rng.choice(["34", "37"]), 15, rng)
        return group(n, [4, 6, 5], rng.choice([" ", "-", ""]))
    else:
        n = luhn_complete("6011", 16, rng)
    return group(n, [4, 4, 4, 4], rng.choice([" ", "-", ""]))


def ssn(rng: random.Random) -> str:
    while True:
        a, b, c = rng.randint(1, 899), rng.randint(1, 99), rng.randint(1, 9999)
        if a != 666:
            return f"{a:03d}-{b:02d}-{c:04d}"


def iban(rng: random.Random) -> str:
    country, length = rng.choice([("DE", 22), ("FR", 27), ("GB", 22), ("NL", 18), ("ES", 24), ("IT", 27)])
    body = "".join(str(rng.randrange(10)) for _ in range(length - 4))
    if country == "GB":
        body = "NWBK" + body[4:]
    elif country == "NL":
        body = "ABNA" + body[4:]
    elif country == "IT":
        body = "X" + body[1:]
    rearranged = body + country + "00"
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    check = 98 - int(numeric) % 97
    value = f"{country}{check:02d}{body}"
    return group(value, [4] * 8, " ") if rng.random() < 0.5 else value


# Assigned North American area codes (a sample): real numbers use them, and validators know it.
US_AREAS = [201, 202, 206, 212, 213, 214, 303, 305, 312, 313, 404, 408, 415, 503, 512, 602, 617, 646, 702, 713,
            718, 720, 773, 805, 818, 917, 919, 949, 971, 978]


def phone(rng: random.Random) -> str:
    kind = rng.choice(["us", "us_paren", "us_intl", "uk_intl", "uk_nat", "fr_nat", "de_intl", "in_intl"])
    d = lambda n: "".join(str(rng.randrange(10)) for _ in range(n))  # noqa: E731
    exchange = str(rng.randint(2, 9)) + d(2)
    return {
        "us": f"{rng.choice(US_AREAS)}-{exchange}-{d(4)}",
        "us_paren": f"({rng.choice(US_AREAS)}) {exchange}-{d(4)}",
        "us_intl": f"+1 {rng.choice(US_AREAS)} {exchange} {d(4)}",
        "uk_intl": f"+44 20 7{d(3)} {d(4)}",
        "uk_nat": f"020 7{d(3)} {d(4)}",
        "fr_nat": f"01 {d(2)} {d(2)} {d(2)} {d(2)}",
        "de_intl": f"+49 30 {d(8)}",
        "in_intl": f"+91 98{d(3)} {d(5)}",
    }[kind]


def email(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)}.{rng.choice(LAST)}{rng.choice(['', str(rng.randint(1, 99))])}@{rng.choice(DOMAINS)}"


MAKERS = {"EMAIL_ADDRESS": email, "PHONE_NUMBER": phone, "CREDIT_CARD": card, "US_SSN": ssn, "IBAN_CODE": iban}
TEMPLATES = {
    "EMAIL_ADDRESS": ["Please reply to {v} with the invoice.", "Customer contact: {v}", "cc {v} on the thread",
                      "My email is {v}, can you update the account?"],
    "PHONE_NUMBER": ["Call me back at {v} after 5pm.", "The store's number is {v}.", "phone: {v}",
                     "You can reach the driver on {v} tomorrow."],
    "CREDIT_CARD": ["Charge card {v} for the renewal.", "card number {v} exp 09/27", "Refund to {v} please.",
                    "The customer paid with {v} yesterday."],
    "US_SSN": ["SSN {v} is on file.", "My social security number is {v}.", "applicant ssn: {v}",
               "Verify identity with SSN {v}."],
    "IBAN_CODE": ["Wire the deposit to IBAN {v}.", "bank account {v} (IBAN)", "Please pay into {v} by Friday.",
                  "IBAN: {v}"],
}
BENIGN = [
    "Order #{n} shipped on 2024-0{m}-1{d} via DHL, tracking {t}.",
    "Upgrade from v{m}.{d}.{n3} to v{m}.{d1}.0 fixed the memory leak.",
    "Commit {h} introduced the regression in build {n}.",
    "The total is ${n3}.{d}9 including {m}% VAT.",
    "Meeting moved to {m}/1{d}/2025 at 10:30 in room {n3}.",
    "Use uuid {u} as the request id in the logs.",
    "for i in range({n3}): total += price[i] * {m}",
    "Error code 0x{hx} at address 0x7ff{hx}{hx}.",
    "Invoice INV-{n} for {n3} units of SKU {t} is due in {d}0 days.",
    "Timestamp 17{n8} corresponds to the outage window.",
    "The model scored {m}{d}.{n3}% on the benchmark with batch size {n3}.",
    "Ticket {t} was escalated; see build log line {n}.",
]


@dataclass
class Sample:
    text: str
    entity: str | None  # None for benign
    value: str | None
    keep: str | None = None  # text next to the value that must survive redaction (a key's name)
    kind: str = ""  # which held-out shape made it


def corpus(n_per_entity: int = 200, n_benign: int = 400, seed: int = 7) -> list[Sample]:
    rng = random.Random(seed)
    out: list[Sample] = []
    for entity, make in MAKERS.items():
        for _ in range(n_per_entity):
            value = make(rng)
            out.append(Sample(rng.choice(TEMPLATES[entity]).format(v=value), entity, value))
    for _ in range(n_benign):
        out.append(Sample(rng.choice(BENIGN).format(
            n=rng.randint(10000, 99999999), n3=rng.randint(100, 999), n8=rng.randint(10**7, 10**8 - 1),
            m=rng.randint(1, 9), d=rng.randint(0, 9), d1=rng.randint(1, 9),
            t="".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(12)),
            h="".join(rng.choice("0123456789abcdef") for _ in range(40)),
            u="-".join("".join(rng.choice("0123456789abcdef") for _ in range(k)) for k in (8, 4, 4, 4, 12)),
            hx="".join(rng.choice("0123456789abcdef") for _ in range(4))), None, None))
    return out


# Held out (issue 10): values glued to a key (`card=...`, `email=...`, the key's name must survive
# for the model to read the rest), and US numbers in phone context that libphonenumber rejects or
# that are written `001-...` or `(212)555-0100`. Written after the engine's first version and kept
# apart from the corpus above. (No benign look-alikes here: a US-shaped number with no phone words
# is a valid number in one of the eight regions Presidio tries, so it was always redacted.)
# North American area codes that are not assigned (libphonenumber 9 rejects every number in them).
UNASSIGNED_AREAS = [200, 222, 233, 255, 266, 277, 288, 300, 322, 333, 355, 366, 377, 388, 400, 422, 433]
KEYS = {"EMAIL_ADDRESS": ["email", "mail", "to", "cc", "user", "contact", "reply_to"],
        "CREDIT_CARD": ["card", "cc_number", "pan", "card_no"], "PHONE_NUMBER": ["phone", "tel", "mobile"]}
GLUED = ["{k}={v}", "?{k}={v}&lang=en", "id=7&{k}={v}", "{k}={v};", "[{k}={v}]"]
US_FORMS = ["{a}-{x}-{d}", "({a}){x}-{d}", "001-{a}-{x}-{d}", "1-{a}-{x}-{d}", "{a}.{x}.{d}", "({a}) {x}-{d}"]
IN_CONTEXT = ["Call me at {v} tonight.", "phone: {v}", "My cell is {v}.", "You can reach the office on {v}.",
              "fax {v}", "contact number {v}"]


def held_out(n_per_kind: int = 60, seed: int = 1010) -> list[Sample]:
    rng = random.Random(seed)
    d = lambda n: "".join(str(rng.randrange(10)) for _ in range(n))  # noqa: E731
    out: list[Sample] = []
    for entity, make in (("EMAIL_ADDRESS", email), ("CREDIT_CARD", card)):
        for _ in range(n_per_kind):
            key, value = rng.choice(KEYS[entity]), make(rng).replace(" ", "").replace("-", "")
            text = rng.choice(GLUED).format(k=key, v=value)
            out.append(Sample(text, entity, value, keep=f"{key}=", kind=f"{entity} glued to a key"))
    for kind, areas in (("unassigned area code", UNASSIGNED_AREAS), ("assigned area code", US_AREAS)):
        for _ in range(n_per_kind):
            form = rng.choice(US_FORMS)
            value = form.format(a=rng.choice(areas), x=str(rng.randint(2, 9)) + d(2), d=d(4))
            out.append(Sample(rng.choice(IN_CONTEXT).format(v=value), "PHONE_NUMBER", value,
                              kind=f"US phone, {kind}, in phone context"))
    return out


# Adversarial shapes, for the linearity tests (tests/adversarial/) and the timing table of
# scripts/bench-pii: each makes `n` characters of what drove a detector's cost super-linear.
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_PROSE = ("Please reply to jane.roe@example.com about order 12345; call 212-555-0143 or +44 20 7946 0958. "
          "Card 4111 1111 1111 1111, IBAN DE89370400440532013000, SSN 078-05-1121. ")


def _repeat(unit: str, n: int) -> str:
    return (unit * (n // len(unit) + 1))[:n]


def _random(alphabet: str, n: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


ADVERSARIAL: dict[str, Callable[[int], str]] = {
    "prose dense with PII": lambda n: _repeat(_PROSE, n),
    "no whitespace": lambda n: _repeat(_PROSE.replace(" ", ""), n),
    "all digits": lambda n: _random("0123456789", n),
    "digits with separators": lambda n: _random("0123456789" * 3 + "- .()", n),
    "phone-sized groups": lambda n: _repeat("212-555-0143-", n),
    "thousands of @": lambda n: "@" * n,
    "a@a@a@": lambda n: _repeat("a@", n),
    "emails glued": lambda n: _repeat("jo@x.io", n),
    "a long local part": lambda n: _repeat("a.", n - 6) + "@x.com",
    "base64": lambda n: _random(_B64, n),
    "one character": lambda n: "a" * n,
    "ones": lambda n: "1" * n,
    "one space, then emails": lambda n: _repeat("x " + "a@b.co," * (n // 7), n),
    "cards glued": lambda n: _repeat("4111111111111111", n),
    "overlapping findings": lambda n: _repeat("4111-1111-1111-1111-078-05-1121-", n),
    "eyJeyJ": lambda n: _repeat("eyJ", n),
    "sk-sk-": lambda n: _repeat("sk-", n),
    "////": lambda n: "/" * n,
    "BEGIN PRIVATE KEY lines": lambda n: _repeat("-----BEGIN PRIVATE KEY-----\n", n),
    "---": lambda n: "-" * n,
    "![x](http://": lambda n: _repeat("![x](http://", n),
    "leetspeak": lambda n: _repeat("1gn0r3 4ll ", n),
    "spaced letters": lambda n: _repeat("i g n o r e ", n),
    "<|": lambda n: _repeat("<|", n),
}
