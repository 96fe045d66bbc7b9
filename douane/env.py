"""The lines that point a workload at douane, per kind of client (`douane env`).

Each client finds the proxy and trusts douane's CA in its own way: Python and curl read variables
naming a CA bundle, Node needs a preload for its fetch and an extra-CA variable, Java a truststore
and system properties. A recipe is those lines, as data: the CLI prints them as shell (for `eval`)
or JSON, and the tests run exactly what it prints.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from douane.node import PRELOAD
from douane.urls import without_password

CLIENTS = ("python", "curl", "node", "rust", "go", "java", "dotnet")
TRUSTSTORE_NAME = "douane-truststore.p12"
# A truststore holds only public certificates; its password guards nothing secret, and this is the
# JDK's own default, so tools that assume it keep working.
TRUSTSTORE_PASSWORD = "changeit"


@dataclass(frozen=True)
class Trust:
    """The files clients trust douane's CA through."""

    ca: Path  # douane's CA certificate alone (PEM): for clients that add it to their own roots
    bundle: Path  # the system's CAs plus douane's: for clients whose variable replaces their roots
    truststore: Path  # Java: the JDK's CAs plus douane's, PKCS12, made with keytool from the lines below


@dataclass(frozen=True)
class Line:
    """One line of a recipe: set a variable (or append to what it holds), or run a command once."""

    comment: str
    name: str | None = None
    value: str | None = None
    append: bool = False  # options variables (NODE_OPTIONS, JAVA_TOOL_OPTIONS): keep the workload's own
    command: str | None = None


@dataclass
class Recipe:
    client: str
    title: str
    lines: list[Line]
    notes: list[str] = field(default_factory=list)


class EnvError(ValueError):
    """A proxy URL or client name douane cannot build lines for."""


def check_proxy_url(proxy: str) -> tuple[str, int]:
    """(host, port) of an http:// proxy URL, or EnvError saying what is wrong."""
    parts = urlsplit(proxy)
    if parts.scheme != "http" or not parts.hostname:
        raise EnvError(f"--proxy {proxy!r}: give douane's address as http://HOST:PORT "
                       "(http://CLIENT:KEY@HOST:PORT when the policy names clients)")
    try:
        port = parts.port or 80
    except ValueError:
        raise EnvError(f"--proxy {proxy!r}: the port is not a number from 1 to 65535") from None
    return parts.hostname, port


def node_import_flag(preload: Path = PRELOAD) -> str:
    """`--import=<preload>`; a file URL when the path holds spaces (NODE_OPTIONS splits on them)."""
    text = str(preload)
    return f"--import={preload.as_uri() if any(c.isspace() for c in text) else text}"


def proxy_recipes(clients: list[str], proxy: str, trust: Trust) -> list[Recipe]:
    """The recipes for these clients (in the order of CLIENTS) behind the proxy at `proxy`."""
    unknown = [c for c in clients if c not in CLIENTS]
    if unknown:
        raise EnvError(f"unknown client(s) {', '.join(unknown)}: douane knows {', '.join(CLIENTS)}")
    host, port = check_proxy_url(proxy)
    makers = {"python": _python, "curl": _curl, "node": _node, "rust": _rust, "go": _go,
              "java": lambda t: _java(t, host, port, proxy), "dotnet": _dotnet}
    return [makers[c](trust) for c in CLIENTS if c in clients]


def _python(trust: Trust) -> Recipe:
    return Recipe("python", "Python: httpx and the openai, anthropic and google-genai SDKs; requests", [
        Line("httpx, the SDKs, urllib, aiohttp (OpenSSL's default paths)", "SSL_CERT_FILE", str(trust.bundle)),
        Line("requests reads only its own variable", "REQUESTS_CA_BUNDLE", str(trust.bundle)),
    ])


def _curl(trust: Trust) -> Recipe:
    return Recipe("curl", "curl", [Line("curl's CA bundle", "CURL_CA_BUNDLE", str(trust.bundle))])


def _node(trust: Trust) -> Recipe:
    return Recipe("node", "Node: the openai, @anthropic-ai/sdk and @google/genai SDKs (fetch), no code change", [
        Line("Node adds it to its own CAs", "NODE_EXTRA_CA_CERTS", str(trust.ca)),
        Line("Node >= 22.21 or 24.5: fetch and http follow HTTPS_PROXY by themselves", "NODE_USE_ENV_PROXY", "1"),
        Line("older Node (18.18+, 20): douane's preload sends fetch through HTTPS_PROXY (undici's "
             "EnvHttpProxyAgent, shipped with douane); it steps aside where Node does it itself",
             "NODE_OPTIONS", node_import_flag(), append=True),
    ], ["Node's http/https modules (not fetch) follow HTTPS_PROXY only on Node >= 22.21 / 24.5; on older Node "
        "a library built on them (not the three SDKs) needs its own proxy option, or douane's base-URL mode"])


def _native(client: str, title: str, trust: Trust) -> Recipe:
    return Recipe(client, title, [
        Line("the system's CAs plus douane's", "SSL_CERT_FILE", str(trust.bundle)),
    ], ["a binary built with its roots compiled in (Rust's webpki-roots) ignores SSL_CERT_FILE: "
        "use douane's base-URL mode for it (douane run --mode reverse)"])


def _rust(trust: Trust) -> Recipe:
    return _native("rust", "Rust: reqwest with rustls-native-certs or native-tls (Codex is one)", trust)


def _go(trust: Trust) -> Recipe:
    recipe = _native("go", "Go: net/http and crypto/x509 on Linux", trust)
    recipe.notes = ["Go reads SSL_CERT_FILE on Linux and the BSDs; on macOS and Windows add douane's CA "
                    "to the system's store"]
    return recipe


def _java(trust: Trust, host: str, port: int, proxy: str) -> Recipe:
    store, password, ca = str(trust.truststore), TRUSTSTORE_PASSWORD, str(trust.ca)
    q = shlex.quote
    jdk = '"${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}"/lib/security/cacerts'
    tmp, log = q(store + ".tmp"), q(store + ".log")
    make = (f"[ {q(store)} -nt {q(ca)} ] || {{ rm -f {tmp} && {{ "
            f"keytool -importkeystore -noprompt -srckeystore {jdk} -srcstorepass {password} "
            f"-destkeystore {tmp} -deststoretype PKCS12 -deststorepass {password} && "
            f"keytool -importcert -noprompt -alias douane-ca -file {q(ca)} -keystore {tmp} -storepass {password}; "
            f"}} >{log} 2>&1 && mv {tmp} {q(store)} "
            f"|| echo \"douane: keytool could not make {store}: see {store}.log\" >&2; }}")
    options = (f"-Dhttps.proxyHost={host} -Dhttps.proxyPort={port} -Djavax.net.ssl.trustStore={store} "
               f"-Djavax.net.ssl.trustStoreType=PKCS12 -Djavax.net.ssl.trustStorePassword={password}")
    notes = ["Java ignores HTTPS_PROXY: the JVM reads the https.proxyHost and https.proxyPort properties"]
    if urlsplit(proxy).username:
        notes.append("Java sends no proxy credentials without code (an Authenticator, and Basic re-enabled with "
                     "-Djdk.http.auth.tunneling.disabledSchemes=), so douane refuses its calls (407): give Java "
                     "workloads douane's base-URL mode (douane run --mode reverse), where the key is the API key")
    return Recipe("java", "Java 9+: java.net.http.HttpClient, HttpsURLConnection (and the SDKs built on them)", [
        Line("a truststore of the JDK's CAs plus douane's, made once with keytool (again when the CA changes)",
             command=make),
        Line("the JVM's proxy and truststore", "JAVA_TOOL_OPTIONS", options, append=True),
    ], notes)


def _dotnet(trust: Trust) -> Recipe:
    return Recipe("dotnet", ".NET: HttpClient (HttpClient.DefaultProxy reads HTTPS_PROXY)", [
        Line("Linux: .NET verifies with OpenSSL, which reads it", "SSL_CERT_FILE", str(trust.bundle)),
    ], ["on Windows and macOS, .NET trusts the system's store: add douane's CA there"])


def render_shell(recipes: list[Recipe], proxy: str) -> str:
    """Shell lines to `eval`: the proxy, then each recipe; a variable set by an earlier recipe to the
    same value is not set twice."""
    q = shlex.quote
    out = [f"# douane: send this workload's LLM calls through {without_password(proxy)}",
           f"export HTTPS_PROXY={q(proxy)}"]
    done: dict[str, str] = {"HTTPS_PROXY": proxy}
    for recipe in recipes:
        out.append(f"# {recipe.title}")
        for line in recipe.lines:
            if line.command is not None:
                out += [f"#   {line.comment}", line.command]
            elif line.name is not None and line.value is not None:
                if done.get(line.name) == line.value and not line.append:
                    out.append(f"#   {line.name}: set above")
                    continue
                done[line.name] = line.value
                value = f'"${{{line.name}:+${line.name} }}"{q(line.value)}' if line.append else q(line.value)
                out += [f"#   {line.comment}", f"export {line.name}={value}"]
        out += [f"#   note: {note}" for note in recipe.notes]
    return "\n".join(out) + "\n"


def as_json(recipes: list[Recipe], proxy: str) -> dict[str, object]:
    """The same as data: variables (an `append` one goes after what the variable holds), commands to
    run once, notes."""
    env: dict[str, str] = {"HTTPS_PROXY": proxy}
    append: list[str] = []
    for recipe in recipes:
        for line in recipe.lines:
            if line.name is not None and line.value is not None:
                env[line.name] = line.value
                if line.append:
                    append.append(line.name)
    return {"env": env, "append": append,
            "commands": [line.command for r in recipes for line in r.lines if line.command is not None],
            "notes": {r.client: r.notes for r in recipes if r.notes}}
