import base64
import hashlib

from douane.identity import Directory, parse_basic
from douane.policy.model import Client, Policy, Team


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_parse_basic() -> None:
    assert parse_basic(basic("bot", "pa:ss")) == ("bot", "pa:ss")
    assert parse_basic("Bearer x") is None
    assert parse_basic("Basic !!!") is None
    assert parse_basic(None) is None


def test_anonymous_without_clients() -> None:
    who = Directory(Policy()).identify(None)
    assert who is not None and who.client == "anonymous"


def test_clients_need_matching_credentials() -> None:
    policy = Policy(clients=[Client(name="bot", team="support", key_sha256=hashlib.sha256(b"s3cret").hexdigest())],
                    teams={"support": Team()})
    d = Directory(policy)
    who = d.identify(basic("bot", "s3cret"))
    assert who is not None and (who.client, who.team) == ("bot", "support")
    assert d.identify(basic("bot", "wrong")) is None
    assert d.identify(basic("other", "s3cret")) is None
    assert d.identify(None) is None
