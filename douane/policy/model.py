"""The policy as pydantic models: the YAML keys of CONTRACT.md, unknown keys rejected."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Format = Literal["openai", "anthropic", "gemini"]

DEFAULT_PII_ENTITIES = ["EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "PHONE_NUMBER", "IBAN_CODE"]


def _split_url(v: str, example: str) -> SplitResult:
    """`v` split into parts, its port checked; ValueError in words that say what to write instead."""
    if any(c.isspace() for c in v):
        raise ValueError(f"a URL has no spaces; write it like {example}")
    parts = urlsplit(v)
    try:
        parts.port  # noqa: B018 - reading it checks it (a number, 0-65535)
    except ValueError:
        raise ValueError(f"the port is not a number from 1 to 65535; write it like {example}") from None
    return parts


def http_url(v: str) -> str:
    """An upstream: http(s)://host[:port][/path]. Credentials in it would reach the audit's `upstream`
    column, and a query or fragment would be glued onto every call's path: both are refused."""
    example = "http://127.0.0.1:9000"
    parts = _split_url(v, example)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL such as {example}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@); give the provider's key with "
                         "api_key_env or api_key_file")
    if parts.query or parts.fragment:
        raise ValueError(f"must not have a query or fragment (?... or #...); write it like {example}/v1")
    return v


def redis_url(v: str) -> str:
    """state.url: checked as redis-py will read it, so that `run` cannot fail on it after `check` passed."""
    example = "redis://127.0.0.1:6379/0"
    parts = _split_url(v, example)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"must be a redis://, rediss:// or unix:// URL such as {example}")
    if parts.scheme == "unix" and not parts.path:
        raise ValueError("a unix:// URL needs the socket's path, e.g. unix:///run/redis/redis.sock")
    if parts.scheme != "unix":
        if not parts.hostname:
            raise ValueError(f"needs a host, e.g. {example}")
        if parts.path not in ("", "/") and not re.fullmatch(r"/\d+", parts.path):
            raise ValueError(f"the path is the database number: {parts.path!r} is not one; write it like {example}")
    if parts.query:
        _redis_options(v)
    return v


def _redis_options(v: str) -> None:
    """Options in the URL's query are passed to redis-py's connection: let it judge them now."""
    from redis.asyncio.connection import ConnectionPool

    try:
        ConnectionPool.from_url(v).make_connection()
    except (TypeError, ValueError) as e:
        raise ValueError(f"redis cannot use the options in this URL: {e}") from None


# Counters (in memory, in Redis' Lua) and costs are exact up to here; a larger number is a typo.
MAX_POLICY_INT = 2**53


class Strict(BaseModel):
    # allow_inf_nan: `.inf` passed `ge=0` and then broke every budget reservation (no limit is spelt null)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _int_in_range(cls, v: object) -> object:
        if type(v) is int and not -MAX_POLICY_INT <= v <= MAX_POLICY_INT:
            raise ValueError(f"must be at most {MAX_POLICY_INT:,} (2**53): counters and costs are exact only "
                             "up to there; leave the key out for no limit")
        return v


class ProviderConfig(Strict):
    hosts: list[str] | None = None
    format: Format | None = None
    upstream: str | None = None
    api_key_env: str | None = None
    api_key_file: str | None = None

    @field_validator("upstream")
    @classmethod
    def _upstream_is_url(cls, v: str | None) -> str | None:
        return None if v is None else http_url(v)

    @field_validator("hosts")
    @classmethod
    def _hosts_are_names(cls, v: list[str] | None) -> list[str] | None:
        for host in v or []:
            if not re.match(r"^[A-Za-z0-9.-]+(:\d+)?$", host):
                raise ValueError(f"{host!r} is not a host name (no scheme, no path)")
        return v


class PiiPolicy(Strict):
    action: Literal["redact", "pseudonymize", "block", "monitor"] = "redact"
    entities: list[str] = Field(default_factory=lambda: list(DEFAULT_PII_ENTITIES))
    score_threshold: float = Field(default=0.3, ge=0.0, le=1.0)


class InjectionPolicy(Strict):
    action: Literal["block", "monitor"] = "block"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    # the learned tier (douane/detect/models/injection-v1) beside the rules: off until its false
    # alarms on ordinary prompts are as rare as the rules' (see BENCHMARKS.md); or a folder holding
    # a transformer classifier exported to ONNX (model.onnx, tokenizer.json): the second tier, asked
    # about the texts the rules score from `second_tier_from` to below the threshold
    model: bool | str = False
    second_tier_from: float = Field(default=0.2, ge=0.0, le=1.0)
    # tool results (what a tool returned, sent back to the model) are untrusted input judged under
    # their own threshold; None: `threshold`
    tool_result_threshold: float | None = Field(default=None, ge=0.0, le=1.0)


class OutputPolicy(Strict):
    secrets: Literal["redact", "block", "monitor"] = "redact"
    pii: Literal["redact", "monitor"] = "monitor"


class ToolArgumentRule(Strict):
    """A rule on the arguments of a tool call: which tools, which values, and what they must (not) be.
    A value is every string under the chosen argument (numbers and booleans as JSON writes them)."""

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]+$")  # its id: tools.arguments.<name>
    tools: list[str] = Field(default_factory=lambda: ["*"])  # globs of the tool names it applies to
    # an argument's name (found at any depth), a path from the top ($.options.url, $.files[*].path),
    # or * for every value of the arguments (and free-text input)
    argument: str = "*"
    deny: str | None = None  # a regex: a value where it matches anywhere is denied
    allow: str | None = None  # a regex: a value it does not match whole is denied
    hosts: list[str] | None = None  # a URL in the value must be on one of these hosts (globs: *.example.com)
    action: Literal["block", "monitor"] = "block"

    @field_validator("deny", "allow")
    @classmethod
    def _is_regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a regular expression ({e}); Python's re syntax, e.g. "
                                 "'rm -rf|curl .*\\|.*sh'") from None
        return v

    @field_validator("argument")
    @classmethod
    def _is_path(cls, v: str) -> str:
        from douane.detect.tools import parse_path

        parse_path(v)
        return v

    @field_validator("hosts")
    @classmethod
    def _hosts_are_globs(cls, v: list[str] | None) -> list[str] | None:
        for host in v or []:
            if not re.fullmatch(r"[A-Za-z0-9.*?-]+", host):
                raise ValueError(f"{host!r} is not a host name or glob such as *.example.com (no scheme, port or path)")
        return v

    @model_validator(mode="after")
    def _says_something(self) -> ToolArgumentRule:
        if self.deny is None and self.allow is None and self.hosts is None:
            raise ValueError("an argument rule needs deny (a regex), allow (a regex) or hosts (a list of hosts)")
        return self


class ToolsPolicy(Strict):
    """Which tools a model may call, with which arguments, how often. A team's or client's `tools:`
    overrides the policy's key by key: the keys it sets replace these, the others are inherited."""

    allow: list[str] | None = None  # globs: only these tools (None: any tool not denied)
    deny: list[str] = Field(default_factory=list)  # globs: never these tools
    action: Literal["block", "monitor"] = "block"  # for allow, deny and the caps
    arguments: list[ToolArgumentRule] = Field(default_factory=list)
    max_calls_per_request: int | None = Field(default=None, ge=0)  # tool calls in one answer
    # tool calls in the conversation as the request carries it: its history's calls plus the answer's
    max_calls_per_conversation: int | None = Field(default=None, ge=0)
    # a denied tool offered to the model in the request's definitions: strip it before the request
    # leaves (the model never sees it), block the request (403), or monitor (record only)
    definitions: Literal["strip", "block", "monitor"] = "strip"

    @field_validator("arguments")
    @classmethod
    def _names_unique(cls, v: list[ToolArgumentRule]) -> list[ToolArgumentRule]:
        names = [r.name for r in v if r.name]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"argument rule name(s) {', '.join(twice)} used twice: each names its rule in the audit")
        return v


class McpServerConfig(Strict):
    """An MCP server reached over streamable HTTP, intercepted like a provider."""

    hosts: list[str] = Field(min_length=1)  # host or host:port, as clients name it
    upstream: str | None = None  # send its traffic here instead (a local copy, a test double)

    @field_validator("upstream")
    @classmethod
    def _upstream_is_url(cls, v: str | None) -> str | None:
        return None if v is None else http_url(v)

    @field_validator("hosts")
    @classmethod
    def _hosts_are_names(cls, v: list[str]) -> list[str]:
        return ProviderConfig._hosts_are_names(v) or v


class McpPolicy(Strict):
    """MCP servers whose JSON-RPC traffic douane inspects: tools/call judged by the caller's `tools:`
    rules, tools/list filtered by them, tool results scanned for injection, each exchange a row."""

    servers: dict[str, McpServerConfig] = Field(default_factory=dict)


class SanitizePolicy(Strict):
    """Invisible and control characters in prompts (douane.detect.sanitize)."""

    action: Literal["strip", "block", "monitor"] = "strip"


ModerationCategory = Literal["harassment", "hate", "sexual", "violence", "self_harm"]


class ModerationCategoryPolicy(Strict):
    """One category's own action and threshold; what it leaves out comes from the section."""

    action: Literal["block", "redact", "monitor", "off"] | None = None
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)

    @field_validator("action", mode="before")
    @classmethod
    def _off(cls, v: object) -> object:
        """YAML reads an unquoted `off` as false: it means off."""
        return "off" if v is False else v


class ModerationPolicy(Strict):
    """Harmful content and the policy's own deny patterns in answers (douane.moderation)."""

    action: Literal["block", "redact", "monitor"] = "block"  # every category's, unless it has its own
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)  # 0.5: the operating point the model was tuned to
    categories: dict[ModerationCategory, ModerationCategoryPolicy] = Field(default_factory=dict)
    # RE2 regular expressions, matched case-insensitively ((?-i) turns that off) in every sentence
    deny: list[str] = Field(default_factory=list)
    deny_action: Literal["block", "redact", "monitor"] | None = None  # None: `action`

    @field_validator("deny")
    @classmethod
    def _are_re2(cls, v: list[str]) -> list[str]:
        from douane.detect.moderation import DenyPatternError, compile_deny

        for i, pattern in enumerate(v):
            try:
                compile_deny(pattern)
            except DenyPatternError as e:
                raise ValueError(f"deny[{i}] {pattern!r}: {e}") from None
        return v


class GuardSettings(Strict):
    """A team's or a client's own guard settings. A section given here overrides, key by key, the
    section that would apply otherwise (the client's team's, else the policy's); keys it leaves out
    are inherited. `null` turns an optional guard off for the scope. One field per guard: a new
    guard is one more field here and on Policy, of the same name."""

    pii: PiiPolicy | None = None
    injection: InjectionPolicy | None = None
    output: OutputPolicy | None = None
    sanitize: SanitizePolicy | None = None
    moderation: ModerationPolicy | None = None

    @field_validator("pii")
    @classmethod
    def _pii_stays_on(cls, v: PiiPolicy | None) -> PiiPolicy:
        if v is None:  # reached only for an explicit null: an absent key is not validated
            raise ValueError("the PII guard cannot be turned off for a scope; give `action: monitor` to only record")
        return v


class Quota(Strict):
    """Limits shared by teams and clients; None means no limit."""

    budget_usd_per_day: float | None = Field(default=None, ge=0)
    budget_usd_per_month: float | None = Field(default=None, ge=0)
    requests_per_minute: int | None = Field(default=None, ge=0)
    tokens_per_minute: int | None = Field(default=None, ge=0)

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.budget_usd_per_day, self.budget_usd_per_month,
                                           self.requests_per_minute, self.tokens_per_minute))


class Client(Quota):
    name: str = Field(min_length=1)
    team: str = Field(min_length=1)
    key_sha256: str
    tools: ToolsPolicy | None = None  # overrides the team's and the policy's, key by key
    guards: GuardSettings | None = None  # over the team's guards, over the policy's

    @field_validator("name")
    @classmethod
    def _name_can_sign_in(cls, v: str) -> str:
        if ":" in v:
            raise ValueError("a client name cannot hold a colon: proxy credentials are NAME:PASSWORD")
        return v

    @field_validator("key_sha256")
    @classmethod
    def _is_hex_digest(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", v):
            raise ValueError("must be the 64 hex digits of sha256(proxy password)")
        return v.lower()


class Team(Quota):
    models: list[str] = Field(default_factory=lambda: ["*"])
    providers: list[str] | None = None
    tools: ToolsPolicy | None = None  # overrides the policy's `tools`, key by key
    guards: GuardSettings | None = None  # over the policy's pii, injection, output, sanitize


class Price(Strict):
    """USD per million tokens; overrides or adds to genai-prices for the models it matches."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0)
    max_output_tokens: int | None = Field(default=None, gt=0)


class ShadowAI(Strict):
    """AI hosts that the policy does not name as providers: tunnelled, and blocked or recorded."""

    action: Literal["block", "monitor", "allow"] = "monitor"
    hosts: list[str] = Field(default_factory=list)
    # A CONNECT to a public IP address names no host: nothing to match a provider on, and its TLS
    # carries no server name either. Blocked by default: a provider reached by its address would
    # go out uninspected. Private, loopback and link-local addresses are never judged so.
    bare_ips: Literal["block", "monitor", "allow"] = "block"

    @field_validator("hosts")
    @classmethod
    def _hosts_are_globs(cls, v: list[str]) -> list[str]:
        for host in v:  # matched against the CONNECT host: a scheme, port or path would never match
            if not re.fullmatch(r"[A-Za-z0-9.*?-]+", host):
                raise ValueError(f"{host!r} is not a host name or glob such as *.mistral.ai "
                                 "(no scheme, port or path)")
        return v


class Metering(Strict):
    # Output tokens assumed for a budget reservation when the request sets no max_tokens.
    default_max_output_tokens: int = Field(default=4096, gt=0)


class Match(Strict):
    team: str | None = None
    client: str | None = None
    provider: str | None = None
    model: str | None = None
    endpoint: str | None = None
    min_input_tokens: int | None = None
    max_input_tokens: int | None = None


class MaxTokensCap(Strict):
    """At most `cap` output tokens: a call asking for more is clamped to it, or refused (400)."""

    cap: int = Field(ge=1)
    over: Literal["clamp", "reject"] = "clamp"


class Defaults(Strict):
    """Request standardisation (douane.defaults): the first rule whose `when` matches a chat call
    sets what the client left out, caps what it asked for, and puts the organisation's system prompt
    first, once. Each change is noted on the call's row."""

    when: Match = Field(default_factory=Match)
    temperature: float | None = Field(default=None, ge=0, le=2)  # set when the call has none
    max_tokens: int | None = Field(default=None, ge=1)  # set when the call has none
    max_tokens_cap: MaxTokensCap | None = None
    tag_user: bool = False  # the provider's end-user field, when missing: the client's name
    system_prompt: str | None = Field(default=None, min_length=1)  # prepended once, unless already first

    @model_validator(mode="after")
    def _whole(self) -> Defaults:
        if self.when.min_input_tokens is not None or self.when.max_input_tokens is not None:
            raise ValueError("when: min_input_tokens and max_input_tokens are not available to defaults "
                             "(they apply before the prompt is measured); match on team, client, provider, "
                             "model or endpoint")
        if self.max_tokens is not None and self.max_tokens_cap is not None and \
                self.max_tokens > self.max_tokens_cap.cap:
            raise ValueError(f"max_tokens {self.max_tokens} is over max_tokens_cap.cap {self.max_tokens_cap.cap}")
        return self


class Route(Strict):
    when: Match = Field(default_factory=Match)
    set_model: str | None = None  # a model, or "cheapest" (with `among`)
    among: list[str] | None = None  # candidates for set_model: cheapest
    set_provider: str | None = None
    set_upstream: str | None = None

    @field_validator("set_upstream")
    @classmethod
    def _upstream_is_url(cls, v: str | None) -> str | None:
        return ProviderConfig._upstream_is_url(v)


class FallbackTarget(Strict):
    provider: str
    model: str | None = None


class Fallback(Strict):
    when: Match = Field(default_factory=Match)
    on: list[str] = Field(default_factory=lambda: ["429", "5xx", "timeout"])
    to: list[FallbackTarget]
    retries: int = Field(default=1, ge=0, le=5)  # more tries of the same target before the next one
    backoff_ms: int = Field(default=200, ge=0)
    first_byte_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("on", mode="before")
    @classmethod
    def _statuses_as_text(cls, v: object) -> object:
        return [str(c) if isinstance(c, int) and not isinstance(c, bool) else c for c in v] \
            if isinstance(v, list) else v

    @field_validator("on")
    @classmethod
    def _known_conditions(cls, v: list[str]) -> list[str]:
        for cond in v:
            if not re.fullmatch(r"[1-5]xx|[1-5]\d\d|timeout|error", cond):
                raise ValueError(f"{cond!r}: use status codes (429), classes (5xx), timeout or error")
        return v


class Breaker(Strict):
    """A target failing this many times in a row is skipped for `cooldown_s`, then probed again."""

    failures: int = Field(default=3, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)


class UpstreamPolicy(Strict):
    """How douane holds its connections to the providers. `pool`: every LLM call goes out through one
    set of warm, kept-alive connections shared by all clients (HTTP/2 where the provider offers it),
    opened when douane starts and kept open; a client that makes one call per process then pays a
    local handshake only. Off by default: a warm, kept-alive client gains nothing from it and pays a
    loopback hop (see BENCHMARKS.md), and douane then opens no connection of its own at start."""

    pool: bool = False


class StatePolicy(Strict):
    backend: Literal["memory", "redis"] = "memory"
    url: str = "redis://127.0.0.1:6379/0"

    @field_validator("url")
    @classmethod
    def _url_is_redis(cls, v: str) -> str:
        return redis_url(v)


class RetentionDays(Strict):
    """How many days the audit keeps calls' bodies, and their rows (null: for ever). Expired bodies
    are erased and expired rows removed, each leaving a tombstone, by the proxy and `douane audit purge`."""

    bodies: float | None = Field(default=None, gt=0)
    rows: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _rows_outlive_bodies(self) -> RetentionDays:
        if self.rows is not None and self.bodies is not None and self.rows < self.bodies:
            raise ValueError(f"rows ({self.rows:g} days) would go before their bodies ({self.bodies:g} days): "
                             f"bodies leave with their rows; make bodies <= rows")
        return self


class AuditPolicy(Strict):
    db: str | None = None
    bodies: Literal["redacted", "none"] = "redacted"
    max_body_chars: int = Field(default=256_000, ge=0)
    # Ed25519 private key (PEM; openssl genpkey -algorithm ed25519) signing segment seals, checkpoints
    # and tombstones; `douane audit verify --key PUBLIC.pem` checks them
    signing_key_file: str | None = None
    checkpoint_every_s: float = Field(default=60.0, gt=0)
    # every checkpoint and tombstone also goes here: a file (append) or an http(s) URL (POST)
    checkpoint_copy: str | None = None
    retention_days: RetentionDays = Field(default_factory=RetentionDays)
    # one audit for a fleet: a shared folder where every instance ships its records (bodies left
    # out), read by DuckDB as one table (douane audit query --fleet DIR); None: this store only
    fleet: str | None = None
    fleet_every_s: float = Field(default=5.0, gt=0)  # seconds between shipments (and one at stop)

    @field_validator("fleet")
    @classmethod
    def _fleet_is_a_folder(cls, v: str | None) -> str | None:
        if v is not None and ("://" in v or not v.strip()):
            raise ValueError("a folder path every instance can write (a shared mount), e.g. /mnt/audit/fleet")
        return v

    @field_validator("checkpoint_copy")
    @classmethod
    def _copy_is_file_or_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if "://" in v:
            example = "https://audit.example.com/douane/trail"
            parts = _split_url(v, example)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"a URL here is http:// or https://, such as {example}; anything else is a file path")
        elif not v.strip():
            raise ValueError("give a file path, or an http(s) URL")
        return v


class Limits(Strict):
    max_request_bytes: int = Field(default=8 * 1024 * 1024, gt=0)  # also once a compressed body is decoded
    guard_timeout_s: float = Field(default=5.0, gt=0)  # a prompt scan taking longer follows `fail`
    max_json_depth: int = Field(default=64, ge=2, le=1000)  # a body nesting deeper is refused (400)
    max_json_strings: int = Field(default=100_000, gt=0)  # a body with more strings and keys is refused
    # the largest max_tokens a call may ask for when neither the policy's prices nor genai-prices
    # know the model's own limit
    max_output_tokens: int = Field(default=1_000_000, gt=0)
    # a connection may wait this long for its next request head (new, or kept alive after an answer)
    idle_timeout_s: float = Field(default=120.0, gt=0)
    request_body_timeout_s: float = Field(default=60.0, gt=0)  # from a request's head to its last byte
    max_connections_per_client: int = Field(default=256, gt=0)  # open connections from one address


class Telemetry(Strict):
    """OpenTelemetry: a span per call, exported over OTLP/HTTP (protobuf) when `otlp_endpoint` is set.
    Collector credentials go in OTEL_EXPORTER_OTLP_HEADERS, never in the policy."""

    otlp_endpoint: str | None = None  # e.g. http://127.0.0.1:4318 (then /v1/traces), or the full traces URL
    service_name: str = Field(default="douane", min_length=1)
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)  # of traces no client started (theirs decide)

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint_is_url(cls, v: str | None) -> str | None:
        return None if v is None else http_url(v)


AnomalySignal = Literal["calls", "tokens", "cost", "errors", "blocks"]
AnomalyScope = Literal["client", "team"]
ALL_SIGNALS: tuple[AnomalySignal, ...] = ("calls", "tokens", "cost", "errors", "blocks")
ALL_SCOPES: tuple[AnomalyScope, ...] = ("client", "team")


class AnomalyFloors(Strict):
    """Per minute, the least a signal must reach to count as a spike, whatever its baseline."""

    calls: float = Field(default=20, ge=0)
    tokens: float = Field(default=20_000, ge=0)
    cost: float = Field(default=0.5, ge=0)  # US dollars
    errors: float = Field(default=10, ge=0)
    blocks: float = Field(default=10, ge=0)


class AnomalyPolicy(Strict):
    """Spikes of a client's or team's usage against its own rolling baseline (median and MAD of its
    last `window_minutes` minutes), and what to do about them."""

    action: Literal["alert", "throttle", "block"] = "alert"
    sensitivity: float = Field(default=6.0, gt=0)  # robust z-score: scaled MADs above the median
    min_ratio: float = Field(default=3.0, ge=1)  # and at least this many times the median
    warmup_minutes: int = Field(default=30, ge=1)  # minutes of history before a subject is judged
    window_minutes: int = Field(default=60, ge=5, le=1440)
    signals: list[AnomalySignal] = Field(default_factory=lambda: list(ALL_SIGNALS))
    scopes: list[AnomalyScope] = Field(default_factory=lambda: list(ALL_SCOPES))
    floors: AnomalyFloors = Field(default_factory=AnomalyFloors)
    cooldown_minutes: int = Field(default=15, ge=1)  # a throttle's length; an alert is not repeated within it
    webhook: str | None = None  # POSTed a JSON body per anomaly

    @field_validator("webhook")
    @classmethod
    def _webhook_is_url(cls, v: str | None) -> str | None:
        return None if v is None else http_url(v)


class Policy(Strict):
    version: Literal[1] = 1
    mode: Literal["enforce", "monitor"] = "enforce"
    fail: Literal["closed", "open"] = "closed"
    # provider paths douane does not model (files, batches, fine-tuning, ...): forwarded with their
    # text bodies scanned for PII, or refused
    other_endpoints: Literal["forward", "block"] = "forward"
    # WebSockets to a provider host other than the ones douane inspects (OpenAI's Responses and
    # Realtime): refused (and recorded), or forwarded uninspected
    other_websockets: Literal["block", "forward"] = "block"
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    pii: PiiPolicy = Field(default_factory=PiiPolicy)
    injection: InjectionPolicy | None = None
    output: OutputPolicy | None = None
    tools: ToolsPolicy | None = None
    mcp: McpPolicy | None = None
    sanitize: SanitizePolicy | None = None
    moderation: ModerationPolicy | None = None
    clients: list[Client] | None = None
    teams: dict[str, Team] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    defaults: list[Defaults] = Field(default_factory=list)
    fallbacks: list[Fallback] = Field(default_factory=list)
    breaker: Breaker = Field(default_factory=Breaker)
    upstream: UpstreamPolicy = Field(default_factory=UpstreamPolicy)
    state: StatePolicy = Field(default_factory=StatePolicy)
    prices: dict[str, Price] = Field(default_factory=dict)
    shadow_ai: ShadowAI = Field(default_factory=ShadowAI)
    metering: Metering = Field(default_factory=Metering)
    audit: AuditPolicy = Field(default_factory=AuditPolicy)
    limits: Limits = Field(default_factory=Limits)
    telemetry: Telemetry = Field(default_factory=Telemetry)
    anomaly: AnomalyPolicy | None = None

    @property
    def enforcing(self) -> bool:
        return self.mode == "enforce"
