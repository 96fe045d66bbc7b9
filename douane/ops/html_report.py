"""`douane audit report html`: one self-contained page people look at.

Charts are inline SVG drawn here (no script, no external file, no web font): the page opens from a
mail attachment or a file share, offline, and a strict Content-Security-Policy forbids it to load
or run anything. Every text from the audit (team names, rules, prompt templates) is escaped.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from douane.ops.insight import Pattern, Query, patterns, templates

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"]
WIDTH, HEIGHT, PAD = 760, 260, 48


@dataclass
class ReportData:
    since: str
    summary: dict[str, Any]
    cost_series: dict[str, list[tuple[str, float]]]  # team -> [(bucket label, USD)]
    buckets: list[str]
    latency: list[tuple[float, float, int]]  # (from ms, to ms, calls)
    percentiles: dict[str, float | None]
    blocks: list[tuple[str, int]]
    top_patterns: list[Pattern]


def gather(query: Query, interval: str, since: str) -> ReportData:
    where = f"ts >= now() - INTERVAL '{interval}' AND provider <> 'shadow'"
    _, rows = query(f"""
        SELECT count(*), coalesce(sum(cost_usd), 0), count(*) FILTER (WHERE decision = 'blocked'),
               count(*) FILTER (WHERE status >= 500 OR status IS NULL), coalesce(sum(input_tokens), 0),
               coalesce(sum(output_tokens), 0), min(ts), max(ts)
        FROM requests WHERE {where}""", None)
    calls, cost, blocked, errors, tokens_in, tokens_out, first, last = rows[0]
    span_hours = (last - first).total_seconds() / 3600 if first and last else 0
    unit = "hour" if span_hours <= 72 else "day"
    _, rows = query(f"""
        SELECT strftime(date_trunc('{unit}', ts), '{'%m-%d %H:00' if unit == 'hour' else '%Y-%m-%d'}') AS bucket,
               coalesce(team, '(none)') AS team, coalesce(sum(cost_usd), 0)
        FROM requests WHERE {where} GROUP BY ALL ORDER BY bucket""", None)
    buckets = sorted({r[0] for r in rows})
    series: dict[str, dict[str, float]] = {}
    for bucket, team, usd in rows:
        series.setdefault(team, {})[bucket] = float(usd)
    cost_series = {team: [(b, values.get(b, 0.0)) for b in buckets] for team, values in
                   sorted(series.items(), key=lambda kv: -sum(kv[1].values()))}
    _, rows = query(f"""
        SELECT floor(log10(greatest(latency_ms, 0.1)) * 4) AS bin, count(*)
        FROM requests WHERE {where} AND latency_ms IS NOT NULL GROUP BY 1 ORDER BY 1""", None)
    latency = [(10 ** (b / 4), 10 ** ((b + 1) / 4), int(n)) for b, n in rows]
    _, rows = query(f"""
        SELECT quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.95), quantile_cont(latency_ms, 0.99)
        FROM requests WHERE {where} AND latency_ms IS NOT NULL""", None)
    percentiles = dict(zip(("p50", "p95", "p99"), rows[0], strict=True))
    _, rows = query(f"""
        SELECT coalesce(split_part(reason, '; ', 1), '(none)'), count(*) FROM requests
        WHERE {where} AND decision = 'blocked' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 12""", None)
    blocks = [(str(rule), int(n)) for rule, n in rows]
    summary = {"calls": calls, "cost_usd": float(cost), "blocked": blocked, "errors": errors,
               "input_tokens": int(tokens_in), "output_tokens": int(tokens_out),
               "first": first.isoformat(timespec="minutes") if first else "-",
               "last": last.isoformat(timespec="minutes") if last else "-"}
    return ReportData(since, summary, cost_series, buckets, latency, percentiles, blocks,
                      patterns(templates(query, interval))[:10])


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def line_chart(series: dict[str, list[tuple[str, float]]], buckets: Sequence[str]) -> str:
    if not buckets:
        return '<p class="empty">no calls in this period</p>'
    top = max((v for points in series.values() for _, v in points), default=0.0) or 1.0
    step = (WIDTH - 2 * PAD) / max(len(buckets) - 1, 1)

    def xy(i: int, v: float) -> str:
        return f"{PAD + i * step:.1f},{HEIGHT - PAD - v / top * (HEIGHT - 2 * PAD):.1f}"

    parts = [_axes(top, "USD")]
    for k, (team, points) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        path = " ".join(xy(i, v) for i, (_, v) in enumerate(points))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"><title>{_e(team)}'
                     f'</title></polyline>')
    for i in range(0, len(buckets), max(1, len(buckets) // 6)):
        parts.append(f'<text x="{PAD + i * step:.1f}" y="{HEIGHT - PAD + 16}" class="tick" text-anchor="middle">'
                     f'{_e(buckets[i])}</text>')
    legend = "".join(f'<span class="key"><i style="background:{PALETTE[k % len(PALETTE)]}"></i>{_e(team)} '
                     f'(${sum(v for _, v in points):.2f})</span>' for k, (team, points) in enumerate(series.items()))
    return _svg("".join(parts), "cost over time by team") + f'<div class="legend">{legend}</div>'


def histogram(bins: Sequence[tuple[float, float, int]], percentiles: dict[str, float | None]) -> str:
    if not bins:
        return '<p class="empty">no latencies recorded</p>'
    top = max(n for _, _, n in bins)
    width = (WIDTH - 2 * PAD) / len(bins)
    parts = [_axes(top, "calls")]
    for i, (lo, hi, n) in enumerate(bins):
        h = n / top * (HEIGHT - 2 * PAD)
        parts.append(f'<rect x="{PAD + i * width + 1:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{max(width - 2, 1):.1f}" '
                     f'height="{h:.1f}" fill="{PALETTE[0]}"><title>{lo:.0f}-{hi:.0f} ms: {n} calls</title></rect>')
        if i % max(1, len(bins) // 8) == 0:
            parts.append(f'<text x="{PAD + i * width:.1f}" y="{HEIGHT - PAD + 16}" class="tick">{lo:.0f}</text>')
    parts.append(f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" class="tick" text-anchor="end">ms (log scale)</text>')
    caption = ", ".join(f"{k} {v:.0f} ms" for k, v in percentiles.items() if v is not None)
    return _svg("".join(parts), "latency distribution") + f'<p class="caption">{_e(caption)}</p>'


def bars(items: Sequence[tuple[str, int]]) -> str:
    if not items:
        return '<p class="empty">nothing was blocked in this period</p>'
    top = max(n for _, n in items)
    row = 26
    height = row * len(items) + 10
    parts = []
    for i, (label, n) in enumerate(items):
        w = n / top * (WIDTH - 320)
        parts.append(f'<text x="270" y="{i * row + 18}" class="label" text-anchor="end">{_e(label[:40])}</text>'
                     f'<rect x="280" y="{i * row + 4}" width="{max(w, 1):.1f}" height="18" fill="{PALETTE[1]}">'
                     f'<title>{_e(label)}: {n}</title></rect>'
                     f'<text x="{284 + w:.1f}" y="{i * row + 18}" class="tick">{n}</text>')
    return (f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
            f'aria-label="blocks by rule">{"".join(parts)}</svg>')


def _axes(top: float, unit: str) -> str:
    base = HEIGHT - PAD
    lines = [f'<line x1="{PAD}" y1="{base}" x2="{WIDTH - PAD}" y2="{base}" class="axis"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{base}" class="axis"/>']
    for frac in (0.5, 1.0):
        y = base - frac * (HEIGHT - 2 * PAD)
        label = f"{top * frac:.2f}" if top < 10 else f"{top * frac:,.0f}"
        lines.append(f'<line x1="{PAD}" y1="{y:.1f}" x2="{WIDTH - PAD}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{PAD - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{label}</text>')
    lines.append(f'<text x="{PAD}" y="{PAD - 10}" class="tick">{_e(unit)}</text>')
    return "".join(lines)


def _svg(body: str, label: str) -> str:
    return (f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
            f'aria-label="{_e(label)}">{body}</svg>')


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#111827;margin:0;background:#f3f4f6}
main{max-width:840px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:0 0 10px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:16px 0;box-shadow:0 1px 2px #0001}
.cards{display:grid;grid-template-columns:repeat(3,1fr);gap:12px}
.card{background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 2px #0001}
.card b{display:block;font-size:20px} .muted,.caption,.empty{color:#6b7280}
.axis{stroke:#9ca3af} .grid{stroke:#e5e7eb} .tick{font-size:11px;fill:#6b7280} .label{font-size:12px;fill:#111827}
.legend{display:flex;flex-wrap:wrap;gap:12px;margin-top:6px} .key i{display:inline-block;width:10px;height:10px;
margin-right:4px;border-radius:2px}
table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e5e7eb;
vertical-align:top} td.num{text-align:right;white-space:nowrap} code{font-size:12px;word-break:break-word}
"""


def render(data: ReportData, db: str) -> str:
    s = data.summary
    error_rate = s["errors"] / s["calls"] if s["calls"] else 0.0
    cards = [("calls", f"{s['calls']:,}"), ("cost", f"${s['cost_usd']:,.2f}"), ("blocked", f"{s['blocked']:,}"),
             ("errors", f"{s['errors']:,} ({error_rate:.1%})"), ("tokens in", f"{s['input_tokens']:,}"),
             ("tokens out", f"{s['output_tokens']:,}")]
    rows = "".join(f'<tr><td>{_e(p.team)}</td><td class="num">{p.calls:,}</td><td class="num">${p.cost:,.4f}</td>'
                   f'<td class="num">{p.variants}</td><td><code>{_e(p.template[:200])}</code></td></tr>'
                   for p in data.top_patterns)
    patterns_html = (f'<table><tr><th>team</th><th>calls</th><th>cost</th><th>variants</th><th>template</th></tr>'
                     f'{rows}</table>') if rows else '<p class="empty">no recurring prompts</p>'
    csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>douane report: last {_e(data.since)}</title><style>{STYLE}</style></head>
<body><main>
<h1>douane: LLM usage, last {_e(data.since)}</h1>
<p class="muted">{_e(db)}: calls from {_e(s['first'])} to {_e(s['last'])} (UTC); made
{_e(time.strftime('%Y-%m-%d %H:%M', time.gmtime()))} UTC</p>
<div class="cards">{''.join(f'<div class="card"><span class="muted">{_e(k)}</span><b>{_e(v)}</b></div>'
                            for k, v in cards)}</div>
<section id="cost"><h2>Cost over time by team</h2>{line_chart(data.cost_series, data.buckets)}</section>
<section id="latency"><h2>Latency distribution</h2>{histogram(data.latency, data.percentiles)}</section>
<section id="blocks"><h2>Blocks by rule</h2>{bars(data.blocks)}</section>
<section id="patterns"><h2>Top prompt patterns</h2>{patterns_html}</section>
</main></body></html>
"""
