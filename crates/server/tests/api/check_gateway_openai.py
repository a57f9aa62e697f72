"""OpenAI's own Python SDK, unchanged (max_retries=0), against our gateway's
/v1/ with gemini-sim behind it: chat, a stream with usage, a tool-call
round trip, JSON mode and a JSON schema, several choices, an image, the
models list, and a 429 the SDK turns into RateLimitError with the
retry-after it read. Prints "GATEWAY OPENAI OK".

    check_gateway_openai.py <base_url> <api_token> <model>
"""

import json
import sys

import openai
from openai import OpenAI

BASE, TOKEN, MODEL = sys.argv[1:4]
client = OpenAI(base_url=f"{BASE}/v1", api_key=TOKEN, max_retries=0)

chat = client.chat.completions.create(
    model=MODEL,
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello openai sdk"}],
    temperature=0.3,
    max_tokens=200,
)
assert "hello openai sdk" in chat.choices[0].message.content, chat
assert chat.choices[0].finish_reason == "stop", chat
assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens > 0, chat.usage
assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-")

chunks = list(
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream openai sdk"}],
        stream=True,
        stream_options={"include_usage": True},
    )
)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert "stream openai sdk" in text, text
with_usage = [c for c in chunks if c.usage is not None]
assert len(with_usage) == 1 and with_usage[0].choices == [], with_usage
usage = with_usage[0].usage
assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0, usage
assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]

tools = [{
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]
messages = [{"role": "user", "content": "Please call weather for Oslo"}]
called = client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
choice = called.choices[0]
assert choice.finish_reason == "tool_calls", choice
call = choice.message.tool_calls[0]
assert call.function.name == "weather" and "city" in json.loads(call.function.arguments), call
messages.append(choice.message.model_dump(exclude_none=True))
messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 3})})
answered = client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
assert "weather answered" in answered.choices[0].message.content, answered
assert answered.choices[0].finish_reason == "stop"

streamed_call = list(
    client.chat.completions.create(model=MODEL, messages=messages[:1], tools=tools, tool_choice="required", stream=True)
)
reasons = [c.choices[0].finish_reason for c in streamed_call if c.choices and c.choices[0].finish_reason]
assert reasons == ["tool_calls"], reasons
assert any(c.choices[0].delta.tool_calls for c in streamed_call if c.choices)

as_json = client.chat.completions.create(
    model=MODEL, messages=[{"role": "user", "content": "json please"}], response_format={"type": "json_object"}
)
json.loads(as_json.choices[0].message.content)
schema = {"type": "object", "properties": {"verdict": {"type": "string"}}, "required": ["verdict"], "additionalProperties": False}
shaped = client.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": "judge this"}],
    response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}},
)
assert "verdict" in json.loads(shaped.choices[0].message.content), shaped

several = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "two ways"}], n=2)
assert [c.index for c in several.choices] == [0, 1], several.choices

pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
seen = client.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}},
    ]}],
)
assert "[image image/png" in seen.choices[0].message.content, seen

assert MODEL in [m.id for m in client.models.list()]

try:
    client.chat.completions.create(model="gemini-0-nonexistent", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("expected a 404")
except openai.NotFoundError as error:
    assert error.code == "model_not_found", error

try:
    OpenAI(base_url=f"{BASE}/v1", api_key="aat_wrong", max_retries=0).models.list()
    raise AssertionError("expected a 401")
except openai.AuthenticationError as error:
    assert error.code == "invalid_api_key", error

for attempt in range(30):
    try:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"again {attempt}"}])
    except openai.RateLimitError as error:
        assert int(error.response.headers["retry-after"]) >= 1, error.response.headers
        assert error.code == "rate_limit_exceeded", error
        break
else:
    raise AssertionError("the fair-use limit never answered 429")

print("GATEWAY OPENAI OK")
