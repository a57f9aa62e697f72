"""Drives gemini-sim with Google's own google-genai SDK.

Proves the simulator's wire format: the SDK parses its answers, its SSE
streams, its token counts and its 429/400 errors. Usage: check_sdk.py BASE_URL
"""

import json
import sys
import urllib.request

from google import genai
from google.genai import errors, types

BASE = sys.argv[1]
MODEL = "gemini-2.5-flash"


def client(key):
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=BASE, api_version="v1beta"))


def script(responses):
    request = urllib.request.Request(
        f"{BASE}/_sim/script", data=json.dumps(responses).encode(), headers={"content-type": "application/json"}
    )
    urllib.request.urlopen(request).read()


good = client("sdk-good-key")

answer = good.models.generate_content(
    model=MODEL,
    contents="hello from the sdk",
    config=types.GenerateContentConfig(system_instruction="Be brief.", temperature=0.2),
)
assert "hello from the sdk" in answer.text, answer.text
assert answer.usage_metadata.prompt_token_count > 0
assert answer.candidates[0].finish_reason == types.FinishReason.STOP

chunks = list(good.models.generate_content_stream(model=MODEL, contents="stream to the sdk"))
assert len(chunks) >= 2, chunks
assert "stream to the sdk" in "".join(chunk.text or "" for chunk in chunks)
assert chunks[-1].usage_metadata.candidates_token_count >= chunks[0].usage_metadata.candidates_token_count

shaped = good.models.generate_content(
    model=MODEL,
    contents="shape this",
    config=types.GenerateContentConfig(
        response_mime_type="application/json",
        response_schema={"type": "OBJECT", "properties": {"answer": {"type": "STRING"}}},
    ),
)
assert "shape this" in json.loads(shaped.text)["answer"], shaped.text

counted = good.models.count_tokens(model=MODEL, contents="count these tokens")
assert counted.total_tokens > 0

# Several 429s, in case this SDK version retries on its own.
script([{"kind": "rate_limit_minute", "retry_ms": 37000}] * 8)
try:
    good.models.generate_content(model=MODEL, contents="too fast")
    raise AssertionError("expected a 429")
except errors.ClientError as error:
    assert error.code == 429, error
    assert error.status == "RESOURCE_EXHAUSTED", error
    details = error.details["error"]["details"]
    assert any(d.get("retryDelay") == "37s" for d in details), details
urllib.request.urlopen(urllib.request.Request(f"{BASE}/_sim/reset", data=b"", method="POST")).read()

# Keep the client referenced: a collected genai.Client closes its transport.
stranger = client("sdk-unknown-key")
try:
    stranger.models.generate_content(model=MODEL, contents="who am I")
    raise AssertionError("expected a 400")
except errors.ClientError as error:
    assert error.code == 400, error
    assert "API_KEY_INVALID" in json.dumps(error.details), error.details

try:
    good.models.generate_content(model="gemini-9-ultra", contents="x")
    raise AssertionError("expected a 404")
except errors.ClientError as error:
    assert error.code == 404, error

# Function calling: a declared function the prompt names is called, with
# arguments of its schema; its response comes back as text.
weather = types.FunctionDeclaration(
    name="weather",
    description="The weather in a city",
    parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
tools = [types.Tool(function_declarations=[weather])]
called = good.models.generate_content(
    model=MODEL, contents="call weather for Oslo", config=types.GenerateContentConfig(tools=tools)
)
assert called.function_calls and called.function_calls[0].name == "weather", called
assert "city" in called.function_calls[0].args, called.function_calls[0].args
answered = good.models.generate_content(
    model=MODEL,
    contents=[
        types.Content(role="user", parts=[types.Part.from_text(text="call weather for Oslo")]),
        called.candidates[0].content,
        types.Content(role="user", parts=[types.Part.from_function_response(name="weather", response={"temp_c": 3})]),
    ],
    config=types.GenerateContentConfig(tools=tools),
)
assert "weather answered" in answered.text, answered.text

several = good.models.generate_content(
    model=MODEL, contents="two ways", config=types.GenerateContentConfig(candidate_count=2)
)
assert [c.index for c in several.candidates] == [0, 1], several.candidates

pixel = bytes.fromhex("89504e470d0a1a0a")
seen = good.models.generate_content(
    model=MODEL, contents=[types.Part.from_text(text="what is this"), types.Part.from_bytes(data=pixel, mime_type="image/png")]
)
assert "[image image/png" in seen.text, seen.text

print("SDK OK")
