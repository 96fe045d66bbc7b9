"""Every client this machine can run, configured only by what `douane env <client>` prints (eval'ed
by bash, as a user's shell would), through a real `douane run` to the mock: the call is redacted at
the mock, answered through douane and has its row. Python and Node have their own files
(test_sdks.py, test_node_sdks.py); here are curl, Java (a keytool truststore) and a native binary
built with Rust (rustls with the platform's roots, as Codex is)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import mock_provider
from tests.e2e.conftest import CA_VARS, ROOT, Douane, routed_policy

EMAIL = "jane.roe@example.com"
JAVA_CLIENT = ROOT / "tests" / "java" / "DouaneClient.java"
RUST_DIR = ROOT / "tests" / "rust"
RUST_CLIENT = RUST_DIR / "target" / "release" / "douane-rust-client"


@pytest.fixture(scope="module")
def douane(tmp_path_factory: pytest.TempPathFactory, mock: str, certs: Path) -> Iterator[Douane]:
    """A proxy of this module's own, not the session's shared one: other modules count its rows."""
    d = Douane(tmp_path_factory.mktemp("clients"), routed_policy(mock), certs).start()
    yield d
    d.stop()


def bare_env(**extra: str) -> dict[str, str]:
    """This machine's environment without what would decide the route or the trust for the client."""
    env = {k: v for k, v in os.environ.items()
           if k not in CA_VARS and "PROXY" not in k.upper() and not k.startswith(("JAVA_TOOL", "JDK_JAVA"))}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def with_douane_env(d: Douane, client: str, command: list[str], cwd: Path, timeout: float = 180,
                    **extra: str) -> subprocess.CompletedProcess[str]:
    """Run `command` after eval "$(douane env CLIENT ...)"."""
    lines = " ".join([sys.executable, "-m", "douane.cli", "env", client, "--proxy", d.proxy, "--certs", str(d.certs),
                      *(["--truststore", extra.pop("truststore")] if "truststore" in extra else [])])
    return subprocess.run(["bash", "-c", f'eval "$({lines})" && exec "$@"', client, *command], cwd=cwd,
                          env=bare_env(**extra), capture_output=True, text=True, timeout=timeout)


def status_id_body(done: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    """The clients here print the status, x-douane-request-id and the body, one per line."""
    lines = done.stdout.split("\n", 2)
    if done.returncode != 0 or len(lines) < 3:
        raise AssertionError(f"client exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return int(lines[0]), lines[1].strip(), lines[2]


def chat_text(body: str, stream: bool) -> str:
    if not stream:
        return json.loads(body)["choices"][0]["message"]["content"]
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])


def assert_through_douane(d: Douane, received: list, call_id: str, text: str, stream: bool) -> dict[str, Any]:
    assert text == f"echo: mail <EMAIL_ADDRESS> from {'stream' if stream else 'plain'}"
    row = d.rows(f"SELECT * FROM requests WHERE id = '{call_id}'", expect=1)[0]
    assert (row["provider"], row["endpoint"], row["stream"], row["status"]) == ("openai", "chat.completions", stream,
                                                                                200)
    assert row["pii_entities"] == ["EMAIL_ADDRESS"]
    with mock_provider.LOCK:
        raw = json.dumps([r["raw"] for r in received])
    assert "<EMAIL_ADDRESS>" in raw and EMAIL not in raw, "redacted before it reached the provider"
    return row


def chat_body(mode: str) -> str:
    return json.dumps({"model": "gpt-4o-mini", "stream": mode == "stream",
                       "messages": [{"role": "user", "content": f"mail {EMAIL} from {mode}"}]})


@pytest.mark.parametrize("mode", ["plain", "stream"])
def test_curl(douane: Douane, received: list, tmp_path: Path, mode: str) -> None:
    done = with_douane_env(douane, "curl", [
        "curl", "-sS", "-N", "--fail-with-body", "-w", "", "-D", str(tmp_path / "headers"),
        "https://api.openai.com/v1/chat/completions", "-H", "authorization: Bearer sk-curl",
        "-H", "content-type: application/json", "--data-binary", chat_body(mode)], tmp_path)
    assert done.returncode == 0, done.stderr
    headers = (tmp_path / "headers").read_text().lower()
    call_id = headers.split("x-douane-request-id: ", 1)[1].split()[0]
    assert_through_douane(douane, received, call_id, chat_text(done.stdout, mode == "stream"), mode == "stream")


@pytest.mark.parametrize("mode", ["plain", "stream"])
def test_java_with_the_keytool_truststore(douane: Douane, received: list, tmp_path: Path, mode: str) -> None:
    if shutil.which("java") is None or shutil.which("keytool") is None:
        pytest.fail("java and keytool (a JDK >= 11) are needed on PATH for the Java client test")
    store = tmp_path / "store.p12"
    done = with_douane_env(douane, "java", ["java", str(JAVA_CLIENT), mode, "gpt-4o-mini", f"mail {EMAIL} from {mode}"],
                           tmp_path, truststore=str(store))
    status, call_id, body = status_id_body(done)
    assert store.exists(), "the printed keytool lines made the truststore"
    assert status == 200 and call_id.startswith("dou_")
    assert_through_douane(douane, received, call_id, chat_text(body, mode == "stream"), mode == "stream")


def test_java_truststore_is_made_once_and_again_when_the_ca_changes(douane: Douane, tmp_path: Path) -> None:
    store = tmp_path / "store.p12"
    probe = ["bash", "-c", "true"]
    assert with_douane_env(douane, "java", probe, tmp_path, truststore=str(store)).returncode == 0
    made = store.stat().st_mtime_ns
    assert with_douane_env(douane, "java", probe, tmp_path, truststore=str(store)).returncode == 0
    assert store.stat().st_mtime_ns == made, "kept while newer than the CA"
    os.utime(store, ns=(made - 10**12, made - 10**12))  # older than the CA: as after `douane ca` made a new one
    assert with_douane_env(douane, "java", probe, tmp_path, truststore=str(store)).returncode == 0
    assert store.stat().st_mtime_ns > made - 10**12, "made again"


@pytest.mark.parametrize("mode", ["plain", "stream"])
def test_rust_binary_with_ssl_cert_file(douane: Douane, received: list, tmp_path: Path, mode: str) -> None:
    if not RUST_CLIENT.exists():
        pytest.fail(f"{RUST_CLIENT} is missing: ./scripts/test builds it (cargo, from Debian's Rust crates)")
    done = with_douane_env(douane, "rust", [str(RUST_CLIENT), mode, "gpt-4o-mini", f"mail {EMAIL} from {mode}"],
                           tmp_path)
    status, call_id, body = status_id_body(done)
    assert status == 200 and call_id.startswith("dou_")
    assert_through_douane(douane, received, call_id, chat_text(body, mode == "stream"), mode == "stream")


def test_python_client_with_requests_and_the_sdk(douane: Douane, received: list, tmp_path: Path) -> None:
    script = (
        "import json, sys, requests, openai\n"
        "r = requests.post('https://api.openai.com/v1/chat/completions', data=sys.argv[1],\n"
        "                  headers={'authorization': 'Bearer sk-py', 'content-type': 'application/json'})\n"
        "c = openai.OpenAI(api_key='sk-py', max_retries=0).chat.completions.with_raw_response.create(\n"
        "    model='gpt-4o-mini', messages=[{'role': 'user', 'content': sys.argv[2]}])\n"
        "print(json.dumps([r.status_code, r.headers['x-douane-request-id'],\n"
        "                  r.json()['choices'][0]['message']['content'],\n"
        "                  c.headers['x-douane-request-id'], c.parse().choices[0].message.content]))\n")
    command = [sys.executable, "-c", script, chat_body("plain"), f"mail {EMAIL} from plain"]
    done = with_douane_env(douane, "python", command, tmp_path)
    assert done.returncode == 0, done.stderr
    status, id_requests, text_requests, id_sdk, text_sdk = json.loads(done.stdout)
    assert status == 200
    assert_through_douane(douane, received, id_requests, text_requests, False)
    assert_through_douane(douane, received, id_sdk, text_sdk, False)
