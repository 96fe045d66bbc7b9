"""URL-typed policy values are checked when the policy loads, not when the proxy first uses them."""

from pathlib import Path

import pytest

from douane.policy import PolicyError, load_policy


def load(tmp_path: Path, text: str) -> object:
    p = tmp_path / "p.yaml"
    p.write_text("version: 1\n" + text)
    return load_policy(p)


def refused(tmp_path: Path, text: str) -> list:
    with pytest.raises(PolicyError) as e:
        load(tmp_path, text)
    return e.value.issues


@pytest.mark.parametrize(("url", "why"), [
    ("notaurl", "redis://"),
    ("http://127.0.0.1:6379/0", "redis://"),
    ("redis://127.0.0.1:99999/0", "port"),
    ("redis://127.0.0.1:port/0", "port"),
    ("redis:///0", "host"),
    ("redis://127.0.0.1:6379/zero", "database number"),
    ("unix://", "socket"),
    ("redis://127.0.0.1:6379/0?no_such_option=1", "no_such_option"),
    ("redis://127.0.0.1:6379/0?socket_timeout=soon", "socket_timeout"),
])
def test_bad_state_urls_are_refused_at_their_line(tmp_path: Path, url: str, why: str) -> None:
    issues = refused(tmp_path, f"state:\n  backend: redis\n  url: '{url}'\n")
    assert [(i.line, i.field) for i in issues] == [(4, "state.url")]
    assert why in issues[0].message, issues[0].message


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://user:secret@redis.internal:6380/2",
                                 "redis://localhost", "unix:///run/redis.sock",
                                 "redis://127.0.0.1:6379/0?socket_timeout=0.5"])
def test_good_state_urls_pass(tmp_path: Path, url: str) -> None:
    assert load(tmp_path, f"state:\n  backend: redis\n  url: '{url}'\n").state.url == url  # type: ignore[attr-defined]


@pytest.mark.parametrize(("url", "why"), [
    ("127.0.0.1:9000", "http://"),
    ("ftp://mirror.internal", "http://"),
    ("http://", "http://"),
    ("http://127.0.0.1:70000", "port"),
    ("http://user:pass@127.0.0.1:9000", "credentials"),
    ("http://user@127.0.0.1:9000", "credentials"),
    ("http://127.0.0.1:9000/v1?x=1", "query"),
    ("http://127.0.0.1:9000/v1#x", "query"),
    ("http://127.0.0.1:9000/a b", "http://"),
])
def test_bad_upstreams_are_refused_everywhere(tmp_path: Path, url: str, why: str) -> None:
    issues = refused(tmp_path, f"providers:\n  openai:\n    upstream: '{url}'\n"
                               f"routes:\n  - set_upstream: '{url}'\n")
    assert [(i.line, i.field) for i in issues] == [(4, "providers.openai.upstream"), (6, "routes[0].set_upstream")]
    assert all(why in i.message for i in issues), issues


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000", "https://gateway.internal/openai/",
                                 "http://[::1]:9000", "HTTPS://Proxy.Example.com"])
def test_good_upstreams_pass(tmp_path: Path, url: str) -> None:
    p = load(tmp_path, f"providers:\n  openai:\n    upstream: '{url}'\n")
    assert p.providers["openai"].upstream == url  # type: ignore[attr-defined]


def test_shadow_ai_hosts_are_host_globs(tmp_path: Path) -> None:
    assert load(tmp_path, "shadow_ai:\n  hosts: ['*.mistral.ai', api.example.com]\n")
    issues = refused(tmp_path, "shadow_ai:\n  hosts: ['https://api.example.com/v1']\n")
    assert issues[0].field == "shadow_ai.hosts" and "host" in issues[0].message


def test_client_names_cannot_hold_a_colon(tmp_path: Path) -> None:
    """Proxy credentials are NAME:PASSWORD: a name with a colon could never sign in."""
    issues = refused(tmp_path, f"teams: {{t: {{}}}}\nclients:\n  - name: 'a:b'\n    team: t\n"
                               f"    key_sha256: '{'a' * 64}'\n")
    assert [(i.line, i.field) for i in issues] == [(4, "clients[0].name")] and "colon" in issues[0].message
