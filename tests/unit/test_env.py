"""`douane env`: the lines per client, as shell and as JSON, and what bash makes of them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from douane.cli import main
from douane.env import CLIENTS, EnvError, Trust, as_json, node_import_flag, proxy_recipes, render_shell
from douane.node import PRELOAD, UNDICI_VERSION

TRUST = Trust(Path("/c/ca.pem"), Path("/c/bundle.pem"), Path("/c/store.p12"))


def exported(lines: str, names: list[str], before: dict[str, str] | None = None) -> dict[str, str]:
    """The variables as bash sees them after `eval` of the lines (commands stripped: no keytool here)."""
    only_exports = "\n".join(line for line in lines.splitlines() if line.startswith(("export ", "#")))
    script = only_exports + "\n" + "\n".join(f'printf "%s\\0" "${{{n}-<unset>}}"' for n in names)
    done = subprocess.run(["bash", "-c", script], env=before or {}, capture_output=True, text=True, check=True)
    return dict(zip(names, done.stdout.split("\0")[:-1], strict=True))


def test_every_client_has_a_recipe_and_the_proxy_comes_first() -> None:
    recipes = proxy_recipes(list(CLIENTS), "http://douane:8080", TRUST)
    assert [r.client for r in recipes] == list(CLIENTS)
    shell = render_shell(recipes, "http://douane:8080")
    assert shell.splitlines()[1] == "export HTTPS_PROXY=http://douane:8080"


def test_shell_lines_set_what_each_client_reads() -> None:
    shell = render_shell(proxy_recipes(list(CLIENTS), "http://douane:8080", TRUST), "http://douane:8080")
    got = exported(shell, ["HTTPS_PROXY", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                           "NODE_EXTRA_CA_CERTS", "NODE_USE_ENV_PROXY", "NODE_OPTIONS", "JAVA_TOOL_OPTIONS"])
    assert got["SSL_CERT_FILE"] == got["REQUESTS_CA_BUNDLE"] == got["CURL_CA_BUNDLE"] == "/c/bundle.pem"
    assert got["NODE_EXTRA_CA_CERTS"] == "/c/ca.pem", "Node appends: the bare CA, not the bundle"
    assert got["NODE_USE_ENV_PROXY"] == "1"
    assert got["NODE_OPTIONS"] == f"--import={PRELOAD}"
    assert "-Dhttps.proxyHost=douane -Dhttps.proxyPort=8080" in got["JAVA_TOOL_OPTIONS"]
    assert "-Djavax.net.ssl.trustStore=/c/store.p12" in got["JAVA_TOOL_OPTIONS"]
    assert shell.count("export SSL_CERT_FILE=") == 1, "set once, the later clients say it is set above"


def test_options_variables_keep_what_the_workload_already_has() -> None:
    shell = render_shell(proxy_recipes(["node", "java"], "http://douane:8080", TRUST), "http://douane:8080")
    got = exported(shell, ["NODE_OPTIONS", "JAVA_TOOL_OPTIONS"],
                   {"NODE_OPTIONS": "--max-old-space-size=512", "JAVA_TOOL_OPTIONS": "-Xmx1g"})
    assert got["NODE_OPTIONS"] == f"--max-old-space-size=512 --import={PRELOAD}"
    assert got["JAVA_TOOL_OPTIONS"].startswith("-Xmx1g -Dhttps.proxyHost=douane ")


def test_paths_with_spaces_and_quotes_survive_the_shell() -> None:
    odd = Trust(Path("/my certs/it's ca.pem"), Path("/my certs/b $HOME.pem"), Path("/my certs/s.p12"))
    shell = render_shell(proxy_recipes(["python", "node"], "http://douane:8080", odd), "http://douane:8080")
    got = exported(shell, ["SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"])
    assert got == {"SSL_CERT_FILE": "/my certs/b $HOME.pem", "NODE_EXTRA_CA_CERTS": "/my certs/it's ca.pem"}
    assert node_import_flag(Path("/a b/preload.mjs")) == "--import=file:///a%20b/preload.mjs"


def test_json_has_the_same_variables_and_says_which_to_append() -> None:
    data = as_json(proxy_recipes(["node", "java"], "http://douane:8080", TRUST), "http://douane:8080")
    assert data["env"]["HTTPS_PROXY"] == "http://douane:8080"
    assert data["append"] == ["NODE_OPTIONS", "JAVA_TOOL_OPTIONS"]
    assert len(data["commands"]) == 1 and "keytool -importcert" in data["commands"][0]


def test_java_with_proxy_credentials_is_told_what_java_cannot_do() -> None:
    [java] = proxy_recipes(["java"], "http://bot:pw@douane:8080", TRUST)
    assert any("Authenticator" in n and "407" in n and "base-URL" in n for n in java.notes)
    assert "pw" not in render_shell([java], "http://bot:pw@douane:8080").splitlines()[0], "no password in comments"


@pytest.mark.parametrize("proxy", ["douane:8080", "https://douane:8080", "http://:8080", "http://douane:99999"])
def test_a_proxy_url_douane_cannot_use_is_refused(proxy: str) -> None:
    with pytest.raises(EnvError, match="--proxy"):
        proxy_recipes(["python"], proxy, TRUST)


def test_cli_prints_lines_for_the_named_clients(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    args = ["env", "node", "curl", "--proxy", "http://127.0.0.1:9999", "--certs", str(certs)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "NODE_OPTIONS" in result.output and "CURL_CA_BUNDLE" in result.output
    assert "REQUESTS_CA_BUNDLE" not in result.output and "JAVA_TOOL_OPTIONS" not in result.output
    assert (certs / "mitmproxy-ca-cert.pem").exists() and (certs / "douane-ca-bundle.pem").exists(), \
        "the files the lines name exist"
    data = json.loads(CliRunner().invoke(main, ["env", "--format", "json", "--certs", str(certs)]).output)
    assert set(data["env"]) >= {"HTTPS_PROXY", "SSL_CERT_FILE", "NODE_OPTIONS", "JAVA_TOOL_OPTIONS"}


def test_cli_names_the_clients_it_knows_when_given_another(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["env", "cobol", "--certs", str(tmp_path)])
    assert result.exit_code == 2 and "unknown client(s) cobol" in result.output and "dotnet" in result.output


def test_the_vendored_undici_is_the_pinned_release() -> None:
    package = json.loads((PRELOAD.parent / "undici" / "package.json").read_text())
    assert package["name"] == "undici" and package["version"] == UNDICI_VERSION
    assert (PRELOAD.parent / "undici" / "LICENSE").read_text().startswith("MIT License")
