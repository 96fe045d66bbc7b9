import pytest

from douane.detect.pii import PiiDetector, redact

ENTITIES = ["EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "PHONE_NUMBER", "IBAN_CODE"]


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector(ENTITIES)


@pytest.mark.parametrize(("text", "entity", "value"), [
    ("write to jane.roe@example.com today", "EMAIL_ADDRESS", "jane.roe@example.com"),
    ("card 4111 1111 1111 1111 exp 09/27", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("ssn 078-05-1121 on file", "US_SSN", "078-05-1121"),
    ("call 212-555-0143 after six", "PHONE_NUMBER", "212-555-0143"),
    ("call +44 20 7946 0958 after six", "PHONE_NUMBER", "+44 20 7946 0958"),
    ("iban DE89370400440532013000 please", "IBAN_CODE", "DE89370400440532013000"),
])
def test_finds_each_entity(detector: PiiDetector, text: str, entity: str, value: str) -> None:
    found = detector.scan(text)
    assert [(f.entity, text[f.start:f.end]) for f in found] == [(entity, value)]


def test_benign_text_is_left_alone(detector: PiiDetector) -> None:
    for text in ["order 12345 shipped in v1.2.3", "sha 3f786850e387550fdab836ed7e6dc881de23001b",
                 "price $1,299.00 on 2024-05-01", "def f(x): return x * 1000"]:
        assert detector.scan(text) == [], text


def test_email_is_not_also_read_as_url() -> None:
    d = PiiDetector(["EMAIL_ADDRESS", "URL"])
    text = "mail bob@corp.example.com now"
    assert [f.entity for f in d.scan(text)] == ["EMAIL_ADDRESS"]


def test_redact_uses_typed_placeholders(detector: PiiDetector) -> None:
    text = "a@b.com and 4111 1111 1111 1111"
    assert redact(text, detector.scan(text)) == "<EMAIL_ADDRESS> and <CREDIT_CARD>"


def test_only_configured_entities(detector: PiiDetector) -> None:
    only_email = PiiDetector(["EMAIL_ADDRESS"])
    assert only_email.scan("call 212-555-0143") == []
    person = PiiDetector(["PERSON", "EMAIL"])
    assert person.unknown == ["EMAIL"]
    assert person.unsupported == ([] if person.ner_model else ["PERSON"])


def test_findings_are_cached_per_text(detector: PiiDetector, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "cache me at c@d.org"
    first = detector.scan(text)
    monkeypatch.setattr(detector, "_scan", lambda t: pytest.fail("rescanned a cached text"))
    assert detector.scan(text) == first


@pytest.mark.parametrize("email", ["x@example.com", "a/b@example.com", "a?b@example.com", "a#b@example.com",
                                   "a:b//c@example.com", "ab@example.notatld", "john.doe@mail.example.co.uk"])
def test_email_validity_cached_by_domain_is_presidios(email: str) -> None:
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    from douane.detect.pii import _by_domain
    rec = EmailRecognizer()
    assert _by_domain(rec.validate_result)(email) == rec.validate_result(email)


@pytest.mark.parametrize("text, value", [("(mail: jane.doe@example.com).", "jane.doe@example.com"),
                                          ("to:bob+tag@corp.example.org,then", "bob+tag@corp.example.org")])
def test_email_inside_punctuation(detector: PiiDetector, text: str, value: str) -> None:
    assert [text[f.start:f.end] for f in detector.scan(text)] == [value]
