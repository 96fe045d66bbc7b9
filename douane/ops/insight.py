"""Usage insight over the audit store: duplicated requests, recurring prompt templates, and premium
calls a cheaper model could have served.

The heavy lifting is SQL (DuckDB reads the Parquet segments in C++): prompt texts are pulled out of
the stored (redacted) request bodies by regular expression, normalised into templates and grouped
there, so Python sees one row per distinct template, never every call. Templates are then clustered
by MinHash over word and word-pair shingles with LSH banding (numpy), which joins prompts that differ in a
few words (a name, an order number) without comparing every pair.
"""

from __future__ import annotations

import fnmatch
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from douane.meter.pricing import Pricer
from douane.policy.model import Policy
from douane.providers import Usage

Query = Callable[[str, list[Any] | None], tuple[list[str], list[tuple[Any, ...]]]]

# The strings of a request body that are prompt text, in every wire format douane stores.
_PROMPT_STRINGS = r'"(?:content|text|input|prompt|system|instructions)"\s*:\s*"((?:[^"\\]|\\.)*)"'
# A prompt's template: lower case, numbers and long ids masked, douane's placeholders made one token.
_TEMPLATE_SQL = f"""
    regexp_replace(regexp_replace(regexp_replace(lower(
        array_to_string(regexp_extract_all(request_body, '{_PROMPT_STRINGS}', 1), ' ')),
        '<[a-z_]+(_[0-9]+)?>', ' <pii> ', 'g'),
        '\\b[0-9a-f]{{8,}}\\b|[0-9]+([.,][0-9]+)*', '#', 'g'),
        '(\\\\[nrt]|\\s)+', ' ', 'g')"""

_WINDOW = "ts >= now() - INTERVAL '{interval}' AND provider <> 'shadow'"


def duplicates(query: Query, interval: str, limit: int = 50) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Requests whose prompt texts were sent again to the same model (case and spacing aside), per
    team: how often, and what the repeats cost (every copy but the first)."""
    sql = f"""
        WITH p AS (
            SELECT coalesce(team, '(none)') AS team, model, ts, cost_usd, request_body,
                   array_to_string(regexp_extract_all(request_body, '{_PROMPT_STRINGS}', 1), ' ') AS prompt
            FROM requests
            WHERE {_WINDOW.format(interval=interval)} AND decision = 'allowed' AND request_body IS NOT NULL),
        r AS (  -- the prompt texts, case and spacing aside (the whole body where no prompt text is found)
            SELECT team, model, ts, cost_usd, left(regexp_replace(prompt, '\\s+', ' ', 'g'), 100) AS prompt,
                   md5(lower(regexp_replace(CASE WHEN prompt = '' THEN request_body ELSE prompt END, '\\s+', '',
                                            'g'))) AS fingerprint
            FROM p)
        SELECT team, model, count(*) AS calls, count(*) - 1 AS repeats,
               round(sum(cost_usd) - arg_min(cost_usd, ts), 6) AS spent_again_usd,
               min(ts) AS first_seen, max(ts) AS last_seen, arg_min(prompt, ts) AS prompt
        FROM r GROUP BY team, model, fingerprint HAVING count(*) > 1
        ORDER BY spent_again_usd DESC NULLS LAST, calls DESC, team LIMIT {int(limit)}"""
    return query(sql, None)


@dataclass
class Template:
    team: str
    text: str
    calls: int
    cost: float


def templates(query: Query, interval: str) -> list[Template]:
    """Distinct prompt templates per team, with their calls and cost (grouped in SQL)."""
    sql = f"""
        WITH t AS (
            SELECT coalesce(team, '(none)') AS team, left(trim({_TEMPLATE_SQL}), 2000) AS template, cost_usd
            FROM requests WHERE {_WINDOW.format(interval=interval)} AND request_body IS NOT NULL)
        SELECT team, template, count(*) AS calls, coalesce(sum(cost_usd), 0) AS cost
        FROM t WHERE template <> '' GROUP BY ALL"""
    _, rows = query(sql, None)
    return [Template(team, text, int(calls), float(cost)) for team, text, calls, cost in rows]


PERMUTATIONS, BANDS = 40, 20  # 20 bands of 2 rows: templates ~25% alike or more meet in some band
SIMILAR = 0.5  # estimated Jaccard similarity of shingles from which two templates are one pattern
_RNG = np.random.default_rng(20261130)
_A = _RNG.integers(1, 2**63, PERMUTATIONS, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd multipliers
_B = _RNG.integers(0, 2**63, PERMUTATIONS, dtype=np.uint64)


def signature(text: str) -> np.ndarray:
    """MinHash of a text's shingles: its words, and its word pairs (order counts a little).
    Each permutation is a multiply-shift hash of the shingle's CRC-32, (a*h + b mod 2^64) >> 32."""
    words = text.split()
    grams = set(words) | {f"{a} {b}" for a, b in zip(words, words[1:], strict=False)} or {text}
    hashes = np.fromiter((zlib.crc32(g.encode()) for g in grams), dtype=np.uint64, count=len(grams))
    return ((_A[:, None] * hashes[None, :] + _B[:, None]) >> np.uint64(32)).min(axis=1)


@dataclass
class Pattern:
    team: str
    template: str  # the most used template of the cluster
    variants: int  # distinct templates in it
    calls: int
    cost: float


def patterns(items: Sequence[Template], min_calls: int = 2) -> list[Pattern]:
    """Templates of one team clustered by MinHash LSH; clusters with at least `min_calls` calls."""
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    buckets: dict[tuple[str, int, bytes], int] = {}
    rows = PERMUTATIONS // BANDS
    sigs = [signature(item.text) for item in items]
    for i, item in enumerate(items):
        for band in range(BANDS):
            key = (item.team, band, sigs[i][band * rows:(band + 1) * rows].tobytes())
            j = buckets.setdefault(key, i)
            # a shared band makes them candidates; the whole signature estimates how alike they are
            if j != i and root(i) != root(j) and float(np.mean(sigs[i] == sigs[j])) >= SIMILAR:
                parent[root(i)] = root(j)
    clusters: dict[int, list[Template]] = {}
    for i, item in enumerate(items):
        clusters.setdefault(root(i), []).append(item)
    out = []
    for members in clusters.values():
        calls = sum(m.calls for m in members)
        if calls >= min_calls:
            top = max(members, key=lambda m: (m.calls, m.text))
            out.append(Pattern(top.team, top.text, len(members), calls, sum(m.cost for m in members)))
    out.sort(key=lambda p: (-p.calls, -p.cost, p.team, p.template))
    return out


# Cheaper models of each provider, cheapest first: candidates for `savings` unless --to names others.
CHEAPER = {
    "openai": ["gpt-4.1-nano", "gpt-4o-mini", "gpt-4.1-mini"],
    "anthropic": ["claude-3-5-haiku-latest", "claude-haiku-4-5"],
    "gemini": ["gemini-2.0-flash-lite", "gemini-2.0-flash", "gemini-2.5-flash"],
}


@dataclass
class Saving:
    team: str
    provider: str
    model: str
    calls: int
    cost: float
    cheaper: str
    cheaper_cost: float

    @property
    def saving(self) -> float:
        return self.cost - self.cheaper_cost


def savings(query: Query, interval: str, pricer: Pricer, policy: Policy | None, max_input: int, max_output: int,
            candidates: dict[str, list[str]] | None = None) -> list[Saving]:
    """Calls with small prompts and short answers, grouped by team and model, each priced again with
    the cheapest candidate model of its provider the team may use; only where that is cheaper."""
    sql = f"""
        SELECT coalesce(team, '(none)') AS team, provider, model, count(*) AS calls,
               sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost
        FROM requests
        WHERE {_WINDOW.format(interval=interval)} AND decision = 'allowed' AND status < 400
          AND cost_usd IS NOT NULL AND model IS NOT NULL
          AND input_tokens <= ? AND output_tokens <= ?
        GROUP BY ALL"""
    _, rows = query(sql, [max_input, max_output])
    ladder = candidates or CHEAPER
    out = []
    for team, provider, model, calls, tokens_in, tokens_out, cost in rows:
        allowed = _allowed_models(policy, team)
        best: tuple[float, str] | None = None
        for candidate in ladder.get(provider, []):
            if candidate == model or not any(fnmatch.fnmatchcase(candidate, g) for g in allowed):
                continue
            price = pricer.cost(provider, candidate, Usage(input_tokens=int(tokens_in), output_tokens=int(tokens_out)))
            if price is not None and (best is None or price.usd < best[0]):
                best = (price.usd, candidate)
        if best is not None and best[0] < float(cost):
            out.append(Saving(team, provider, model, int(calls), float(cost), best[1], best[0]))
    out.sort(key=lambda s: (-s.saving, s.team, s.model))
    return out


def _allowed_models(policy: Policy | None, team: str) -> list[str]:
    if policy is None:
        return ["*"]
    t = policy.teams.get(team)
    return t.models if t is not None else ["*"]
