"""PII inside tool calls and tool results is redacted through the proxy, in every wire format (README:
"every text part of every message (system, user, assistant, tool calls and results) is scanned").

Each conversation is built with the provider's official SDK, as a workload would send it: the model
asked for a tool with the user's e-mail in its arguments, and the tool's result carries a phone
number. What reaches the provider must hold neither, at the places the provider reads them.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
from google import genai
from google.genai import types

from tests.e2e.conftest import Douane, body_of
from tests.e2e.test_sdks import EMAIL, PHONE, client_env, only_row

TOOL = {"type": "function", "function": {
    "name": "send_mail", "description": f"Send a mail (the sender is always {EMAIL})",
    "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}}}


def assert_left_redacted(received: list[dict[str, Any]], d: Douane, call_id: str) -> None:
    raw = received[-1]["raw"]
    assert EMAIL not in raw and PHONE not in raw, "the provider never sees them"
    row = only_row(d, call_id)
    assert row["pii_entities"] == ["EMAIL_ADDRESS", "PHONE_NUMBER"]
    assert "pii.redact" in row["reason"]
    assert EMAIL not in row["request_body"] and PHONE not in row["request_body"]


def test_openai_chat_tool_calls_and_tool_messages(douane: Douane, received: list) -> None:
    with client_env(douane):
        raw = openai.OpenAI(api_key="sk-x").chat.completions.with_raw_response.create(
            model="gpt-4o-mini", tools=[TOOL],  # type: ignore[list-item]
            messages=[
                {"role": "user", "content": "mail my manager"},
                {"role": "assistant", "content": None, "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "send_mail", "arguments": json.dumps({"to": EMAIL})}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": f"sent; they may call back on {PHONE}"}])
    sent = body_of(received[-1])
    arguments = sent["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == {"to": "<EMAIL_ADDRESS>"}
    assert sent["messages"][2]["content"] == "sent; they may call back on <PHONE_NUMBER>"
    assert sent["tools"][0]["function"]["description"] == "Send a mail (the sender is always <EMAIL_ADDRESS>)"
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_1", "the call's id and name are left alone"
    assert raw.parse().choices[0].message.content == "echo: sent; they may call back on <PHONE_NUMBER>"
    assert_left_redacted(received, douane, raw.headers["x-douane-request-id"])


def test_openai_responses_function_call_and_output(douane: Douane, received: list) -> None:
    with client_env(douane):
        raw = openai.OpenAI(api_key="sk-x").responses.with_raw_response.create(
            model="gpt-4o-mini", input=[
                {"role": "user", "content": "mail my manager"},
                {"type": "function_call", "call_id": "call_1", "name": "send_mail",
                 "arguments": json.dumps({"to": EMAIL})},
                {"type": "function_call_output", "call_id": "call_1", "output": f"sent; call back on {PHONE}"}])
    items = body_of(received[-1])["input"]
    assert json.loads(items[1]["arguments"]) == {"to": "<EMAIL_ADDRESS>"}
    assert items[2]["output"] == "sent; call back on <PHONE_NUMBER>"
    assert (items[1]["call_id"], items[1]["name"]) == ("call_1", "send_mail")
    assert_left_redacted(received, douane, raw.headers["x-douane-request-id"])


def test_anthropic_tool_use_and_tool_result(douane: Douane, received: list) -> None:
    with client_env(douane):
        raw = anthropic.Anthropic(api_key="sk-x").messages.with_raw_response.create(
            model="claude-haiku-4-5", max_tokens=64,
            tools=[{"name": "send_mail", "description": "Send a mail",
                    "input_schema": {"type": "object", "properties": {"to": {"type": "string"}}}}],
            messages=[
                {"role": "user", "content": "mail my manager"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "send_mail", "input": {"to": EMAIL}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": f"sent; call back on {PHONE}"},
                    {"type": "tool_result", "tool_use_id": "toolu_2",
                     "content": [{"type": "text", "text": f"cc {EMAIL}"}]}]}])
    messages = body_of(received[-1])["messages"]
    assert messages[1]["content"][0]["input"] == {"to": "<EMAIL_ADDRESS>"}
    results = messages[2]["content"]
    assert results[0]["content"] == "sent; call back on <PHONE_NUMBER>"
    assert results[1]["content"] == [{"type": "text", "text": "cc <EMAIL_ADDRESS>"}]
    assert_left_redacted(received, douane, raw.headers["x-douane-request-id"])


def test_gemini_function_call_and_function_response(douane: Douane, received: list) -> None:
    with client_env(douane):
        client = genai.Client(api_key="x")
        reply = client.models.generate_content(model="gemini-2.0-flash", contents=[
            types.Content(role="user", parts=[types.Part(text="mail my manager")]),
            types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(
                name="send_mail", args={"to": EMAIL, "cc": [EMAIL]}))]),
            types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
                name="send_mail", response={"result": f"sent; call back on {PHONE}"}))])])
    contents = body_of(received[-1])["contents"]
    assert contents[1]["parts"][0]["functionCall"] == {"name": "send_mail",
                                                       "args": {"to": "<EMAIL_ADDRESS>", "cc": ["<EMAIL_ADDRESS>"]}}
    assert contents[2]["parts"][0]["functionResponse"]["response"] == {"result": "sent; call back on <PHONE_NUMBER>"}
    headers = {k.lower(): v for k, v in (reply.sdk_http_response.headers or {}).items()}  # type: ignore[union-attr]
    assert_left_redacted(received, douane, headers["x-douane-request-id"])
