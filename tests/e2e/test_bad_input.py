"""Bad input and failures: each has a defined answer, an actionable error, and loses no record."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys

import anthropic
import brotli
import duckdb
import httpx
import openai
import pytest

from tests.e2e.conftest import ROOT, Douane, free_port
from tests.e2e.test_sdks import EMAIL, client_env, failures_from_each_sdk

CHAT = "https://api.openai.com/v1/chat/completions"


def chat(text: str, model: str = "gpt-4o-mini", **extra: object) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def row_for(d: Douane, response: httpx.Response) -> dict:
    call_id = response.headers["x-douane-request-id"]
    rows = d.rows(f"SELECT * FROM requests WHERE id = '{call_id}'", expect=1)
    assert len(rows) == 1
    return rows[0]


def test_malformed_json_is_refused_in_provider_shape(douane: Douane, received: list) -> None:
    with douane.http() as http:
        r = http.post(CHAT, content=b'{"model": "gpt-4o-mini", "messages": [',
                      headers={"content-type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "unreadable_body" and "could not be read as JSON" in err["message"]
    assert err["type"] == "invalid_request_error"
    assert received == [], "an uninspectable body must not be forwarded"
    row = row_for(douane, r)
    assert row["decision"] == "blocked" and row["status"] == 400 and row["reason"] == "unreadable_body"


def test_invalid_utf8_is_refused(douane: Douane, received: list) -> None:
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "caf\xe9 \xff"}]}'
    with douane.http() as http:
        r = http.post(CHAT, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid UTF-8" in r.json()["error"]["message"]
    assert received == []
    assert row_for(douane, r)["decision"] == "blocked"


@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_compressed_request_body_is_inspected(douane: Douane, received: list, encoding: str) -> None:
    raw = json.dumps(chat(f"compressed {EMAIL}")).encode()
    packed = gzip.compress(raw) if encoding == "gzip" else brotli.compress(raw)
    with douane.http() as http:
        r = http.post(CHAT, content=packed, headers={"content-type": "application/json",
                                                     "content-encoding": encoding})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "echo: compressed <EMAIL_ADDRESS>"
    assert EMAIL not in received[-1]["raw"]
    assert "content-encoding" not in {k.lower() for k in received[-1]["headers"]}


def test_body_over_limit_is_refused(make_douane, received: list) -> None:
    d = make_douane(limits={"max_request_bytes": 2000})
    with d.http() as http:
        r = http.post(CHAT, json=chat("x" * 5000))
        small = http.post(CHAT, json=chat("small"))
    assert r.status_code == 413
    assert "over the limit of 2000 bytes" in r.json()["error"]["message"]
    assert small.status_code == 200 and len(received) == 1
    row = row_for(d, r)
    assert row["decision"] == "blocked" and row["status"] == 413


def test_upstream_that_drops_mid_stream_is_audited(douane: Douane) -> None:
    with client_env(douane):
        client = openai.OpenAI(api_key="sk-x", max_retries=0)
        got = []
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            for chunk in client.chat.completions.create(model="drop-mid-stream", stream=True,
                                                        messages=[{"role": "user", "content": "hi"}]):
                got.append(chunk)
    assert len(got) >= 1, "events before the drop should have reached the client"
    rows = douane.rows("SELECT * FROM requests WHERE model_requested = 'drop-mid-stream'", expect=1)
    assert rows[-1]["status"] == 200 and "stream ended early" in rows[-1]["error"]


def test_unreachable_upstream_answers_502_in_each_provider_shape(make_douane) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    d = make_douane({"version": 1, "providers": {p: {"upstream": dead} for p in ("openai", "anthropic", "gemini")}})
    oe, ae, ge = failures_from_each_sdk(d, "gpt-4o-mini", "claude-haiku-4-5", "gemini-2.0-flash")
    assert oe.status_code == 502 and oe.body["code"] == "upstream_failed"
    assert "could not get an answer from openai" in oe.body["message"]
    assert ae.status_code == 502 and ae.body["error"]["type"] == "api_error"
    assert ge.code == 502 and ge.status == "UNAVAILABLE"
    rows = d.rows(expect=3)
    assert [(r["provider"], r["status"]) for r in rows] == [("openai", 502), ("anthropic", 502), ("gemini", 502)]
    for r in rows:
        assert "upstream failed" in r["error"] and r["reason"] == "upstream_failed"


def test_upstream_gzip_reply_is_decoded_for_inspection(douane: Douane) -> None:
    with douane.http() as http:
        plain = http.post(CHAT, json=chat("zip it", model="gzip-reply"))
        with http.stream("POST", CHAT, json=chat("zip stream", model="gzip-reply", stream=True)) as s:
            streamed = b"".join(s.iter_raw())
            stream_headers = s.headers
    assert plain.json()["choices"][0]["message"]["content"] == "echo: zip it"
    assert "content-encoding" not in stream_headers
    assert b"zip " in streamed and b"[DONE]" in streamed
    rows = douane.rows("SELECT * FROM requests WHERE model_requested = 'gzip-reply' ORDER BY ts", expect=2)
    assert "echo: zip it" in rows[-2]["response_body"]
    assert rows[-1]["response_body"] == "echo: zip stream" and rows[-1]["output_tokens"] == 3


def test_unknown_endpoint_is_forwarded_with_its_text_upload_redacted(douane: Douane, received: list) -> None:
    """A batch input uploaded to /v1/files carries prompts the chat guards never see: its text is scanned."""
    line = {"custom_id": "1", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"mail {EMAIL}"}]}}
    upload = (json.dumps(line) + "\n" + json.dumps({**line, "custom_id": "2"}) + "\n").encode()
    with douane.http() as http:
        r = http.post("https://api.openai.com/v1/files", files={"file": ("batch.jsonl", upload)},
                      data={"purpose": "batch"})
    assert r.status_code == 200 and r.json()["id"] == "file-mock"
    assert len(received) == 1
    sent = received[0]["raw"]
    assert EMAIL not in sent and sent.count("<EMAIL_ADDRESS>") == 2 and 'name="purpose"' in sent
    row = row_for(douane, r)
    assert row["endpoint"] == "other" and row["path"] == "/v1/files"
    assert "other endpoint" in row["reason"] and "pii.redact: EMAIL_ADDRESS x2" in row["reason"]
    assert row["pii_entities"] == ["EMAIL_ADDRESS"]


def test_non_provider_hosts_are_tunnelled_untouched(douane: Douane, tmp_path) -> None:
    """A TLS server that is not a provider keeps its own certificate: douane did not intercept."""
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from mitmproxy.certs import CertStore

    CertStore.create_store(tmp_path, "site", 2048)  # an unrelated CA: only this test's client trusts it
    store = CertStore.from_store(tmp_path, "site", 2048)
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    entry = store.get_cert("localhost", [x509.DNSName("localhost")])
    (tmp_path / "leaf.pem").write_bytes(entry.cert.to_pem())
    (tmp_path / "leaf.key").write_bytes(entry.privatekey.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))

    class Hello(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            body = b"untouched " + EMAIL.encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    port = free_port()
    server = HTTPServer(("127.0.0.1", port), Hello)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        verify = ssl.create_default_context(cafile=str(tmp_path / "site-ca-cert.pem"))
        with httpx.Client(proxy=douane.proxy, verify=verify, trust_env=False) as http:
            r = http.post(f"https://localhost:{port}/v1/chat/completions", json=chat(f"to {EMAIL}"))
        assert r.text == f"untouched {EMAIL}"
        assert "x-douane-request-id" not in r.headers
    finally:
        server.shutdown()
    # records are written in the order calls end: once a later provider call's row has landed, a row
    # for the tunnelled call would have landed too
    with douane.http() as http:
        marker = http.post(CHAT, json=chat("a later call"))
    assert row_for(douane, marker)["host"] == "api.openai.com"
    assert douane.rows("SELECT id FROM requests WHERE host = 'localhost' OR path LIKE '%localhost%'") == []


def test_a_host_header_that_disagrees_with_the_connect_target_is_refused(douane: Douane, received: list) -> None:
    """Classified by the CONNECT target, sent by the Host header: the two must name the same provider."""
    with douane.http() as http:
        r = http.post(CHAT, json=chat(f"spoof {EMAIL}"), headers={"host": "example.com"})
    assert r.status_code == 421 and r.json()["error"]["code"] == "misdirected_request"
    assert "the Host header names no provider" in r.json()["error"]["message"]
    assert received == []
    row = row_for(douane, r)
    assert row["host"] == "api.openai.com" and row["decision"] == "blocked" and row["status"] == 421


def test_pii_block_answers_403_in_sdk_shape(make_douane, received: list) -> None:
    d = make_douane(pii={"action": "block"})
    with client_env(d):
        with pytest.raises(openai.PermissionDeniedError) as e:
            openai.OpenAI(api_key="sk-x", max_retries=0).chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"mail {EMAIL}"}])
        with pytest.raises(anthropic.PermissionDeniedError) as ae:
            anthropic.Anthropic(api_key="sk-x", max_retries=0).messages.create(
                model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": f"mail {EMAIL}"}])
    assert "pii.block" in e.value.message and "EMAIL_ADDRESS" in e.value.message
    assert ae.value.body["error"]["type"] == "permission_error"
    assert received == []
    rows = d.rows(expect=2)
    assert [(r["provider"], r["decision"], r["status"], r["reason"]) for r in rows] == [
        ("openai", "blocked", 403, "pii.block"), ("anthropic", "blocked", 403, "pii.block")]


def test_monitor_mode_changes_nothing_on_the_wire(make_douane, received: list) -> None:
    d = make_douane(mode="monitor", pii={"action": "block"})
    with client_env(d):
        reply = openai.OpenAI(api_key="sk-x").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"mail {EMAIL}"}])
    assert reply.choices[0].message.content == f"echo: mail {EMAIL}"
    assert EMAIL in received[-1]["raw"]
    row = d.rows(expect=1)[0]
    assert row["decision"] == "allowed" and row["pii_entities"] == ["EMAIL_ADDRESS"]
    assert "would block" in row["reason"] and row["mode"] == "monitor"


def test_invalid_policy_refuses_to_start(make_douane) -> None:
    d = make_douane({"version": 1, "pii": {"action": "erase"}, "teems": {}}, start=False)
    with pytest.raises(RuntimeError, match="exited 1"):
        d.start()
    log = d.log()
    assert "policy.yaml:" in log and "pii.action" in log and "teems: unknown key" in log


def test_unknown_mitmproxy_option_refuses_to_start(make_douane) -> None:
    d = make_douane(start=False, args=("--set", "no_such_option=1"))
    with pytest.raises(RuntimeError, match="exited 2"):
        d.start()
    assert "Unknown option(s): no_such_option" in d.log() and "mitmdump --options" in d.log()


def test_auditors_query_while_proxy_runs_and_sigterm_flushes(make_douane) -> None:
    d = make_douane()
    with d.http() as http:
        for i in range(3):
            assert http.post(CHAT, json=chat(f"live {i}")).status_code == 200
        # stock DuckDB, read-only, while the proxy is running: no lock error, rows visible
        rows = d.rows(expect=3)
        assert len(rows) == 3
        con = duckdb.connect(str(d.db), read_only=True)
        assert con.execute("SELECT count(*) FROM requests").fetchone()[0] == 3
        # a second reader at the same time, through the CLI
        cli = subprocess.run([sys.executable, "-m", "douane.cli", "audit", "query", "--db", str(d.db),
                              "--format", "json", "SELECT count(*) AS n FROM requests"],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout) == [{"n": 3}]
        for i in range(20):
            assert http.post(CHAT, json=chat(f"burst {i}")).status_code == 200
        con.close()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(20) == 0
    assert len(d.rows()) == 23, "every record must be written before the proxy exits"
