"""Google's own google-genai SDK, unchanged, against our gateway (gemini-sim
behind it): generate, stream, count tokens, list and get models, and a 429
the SDK parses. Prints "GATEWAY GENAI OK".

    check_gateway_genai.py <base_url> <api_token> <model>
"""

import sys

from google import genai
from google.genai import errors, types

BASE, TOKEN, MODEL = sys.argv[1:4]

client = genai.Client(api_key=TOKEN, http_options=types.HttpOptions(base_url=BASE, api_version="v1beta"))

answer = client.models.generate_content(
    model=MODEL,
    contents="hello through the gateway",
    config=types.GenerateContentConfig(system_instruction="Be brief.", temperature=0.2),
)
assert "hello through the gateway" in answer.text, answer.text
assert answer.usage_metadata.prompt_token_count > 0
assert answer.candidates[0].finish_reason == types.FinishReason.STOP

chunks = list(client.models.generate_content_stream(model=MODEL, contents="stream through the gateway"))
assert len(chunks) >= 2, chunks
assert "stream through the gateway" in "".join(chunk.text or "" for chunk in chunks)

counted = client.models.count_tokens(model=MODEL, contents="count these tokens")
assert counted.total_tokens > 0, counted

names = [model.name for model in client.models.list()]
assert f"models/{MODEL}" in names, names
assert client.models.get(model=MODEL).name == f"models/{MODEL}"

try:
    client.models.generate_content(model="gemini-0-nonexistent", contents="x")
    raise AssertionError("expected a 404")
except errors.ClientError as error:
    assert error.code == 404 and error.status == "NOT_FOUND", error

# The user's fair use is small in this test: the gateway answers the
# overflow itself, as Google would, with how long to wait.
for attempt in range(20):
    try:
        client.models.generate_content(model=MODEL, contents=f"again {attempt}")
    except errors.ClientError as error:
        assert error.code == 429 and error.status == "RESOURCE_EXHAUSTED", error
        details = error.details["error"]["details"]
        delays = [d["retryDelay"] for d in details if d.get("@type", "").endswith("RetryInfo")]
        assert delays and delays[0].endswith("s") and int(delays[0][:-1]) >= 1, details
        break
else:
    raise AssertionError("the fair-use limit never answered 429")

stranger = genai.Client(api_key="aat_not-a-token", http_options=types.HttpOptions(base_url=BASE, api_version="v1beta"))
try:
    stranger.models.generate_content(model=MODEL, contents="who am I")
    raise AssertionError("expected a 400")
except errors.ClientError as error:
    assert error.code == 400 and "API_KEY_INVALID" in str(error.details), error.details

print("GATEWAY GENAI OK")
