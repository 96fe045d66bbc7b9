"""In-process cost of governing tool calls on streamed answers, in CPU time (steady under a busy machine).

For an OpenAI chat stream of 200 text events (no tool call) and for a stream carrying one tool call,
the CPU time of the answer tap per event: without the tool watch (as before tool governance), with
it but no `tools:` policy (calls only recorded), and with a `tools:` policy (calls held and judged).
The first event of a stream without tool calls must leave at once in every case (checked, not timed).

    .venv/bin/python scripts/bench_tools.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from douane.call import new_call_id  # noqa: E402
from douane.classify import open_call  # noqa: E402
from douane.policy import Policy  # noqa: E402
from douane.providers import ADAPTERS, ProviderSpec  # noqa: E402
from douane.streaming import StreamTap  # noqa: E402
from douane.toolguard import ToolWatch  # noqa: E402
from tests.mock_provider import tool_events  # noqa: E402

TOOLS = Policy.model_validate({"tools": {"deny": ["shell*"], "arguments": [
    {"tools": ["fetch"], "argument": "url", "hosts": ["docs.example.com"]},
    {"argument": "command", "deny": r"rm -rf|curl .*\|.*sh"}]}})


def text_stream(n: int) -> list[bytes]:
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}]}
              for i in range(n)]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]


def run(events: list[bytes], policy: Policy | None) -> tuple[float, int]:
    """CPU seconds for one stream through a fresh tap; bytes out after the first event."""
    call = open_call(new_call_id(), time.time(), ProviderSpec("openai", "openai", ("h",)), "h", "POST",
                     "/v1/chat/completions")
    watch = ToolWatch(policy, call) if policy is not None else None
    tap = StreamTap(ADAPTERS["openai"], "chat.completions", None, tools=watch)
    start = time.process_time()
    first = len(b"".join(tap(events[0])))
    for event in events[1:]:
        tap(event)
    tap(b"")
    return time.process_time() - start, first


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    plain = text_stream(200)
    tooled = [e.encode() for e in tool_events("openai", False, "m", [("fetch", {"url": "https://docs.example.com/a"})])]
    print("| stream | tool watch | CPU us per event (median of rounds) | first event out at once |")
    print("| --- | --- | --- | --- |")
    for name, events in (("200 text events, no tool call", plain), ("text then one tool call", tooled)):
        for label, policy in (("none (before)", None), ("no tools: policy", Policy()), ("tools: policy", TOOLS)):
            times, firsts = [], set()
            for _ in range(args.rounds):
                cpu, first = run(events, policy)
                times.append(cpu / len(events) * 1e6)
                firsts.add(first == len(events[0]))
            print(f"| {name} | {label} | {statistics.median(times):.1f} | {'yes' if firsts == {True} else 'NO'} |")


if __name__ == "__main__":
    main()
