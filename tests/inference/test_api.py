"""The API as clients use it: shapes, streaming, auth, limits, metrics, OpenAPI."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from .conftest import MODEL, auth_headers, token


def _completion(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/v1/completions", json={"model": MODEL, "prompt": "Spot capacity", "max_tokens": 8, **body})


def test_completion_shape_and_usage(client):
    response = _completion(client, temperature=0)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion" and body["model"] == MODEL
    [choice] = body["choices"]
    assert choice["finish_reason"] == "length" and choice["text"]
    assert body["usage"]["completion_tokens"] == 8
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 8
    assert response.headers["X-Request-ID"]


def test_empty_prompt_generates_from_the_start_of_sequence(client):
    response = _completion(client, prompt="", max_tokens=4)
    assert response.status_code == 200, response.text
    assert response.json()["usage"] == {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}


def test_a_vanishing_temperature_is_greedy_not_a_crash(client):
    tiny = _completion(client, temperature=1e-30, max_tokens=6)
    assert tiny.status_code == 200, tiny.text
    assert tiny.json()["choices"][0]["text"] == _completion(client, temperature=0, max_tokens=6).json()["choices"][0]["text"]


def test_greedy_completion_is_deterministic(client):
    first = _completion(client, temperature=0).json()["choices"][0]["text"]
    second = _completion(client, temperature=0).json()["choices"][0]["text"]
    assert first == second


def test_stop_string_ends_the_completion_before_it(client):
    text = _completion(client, temperature=0, max_tokens=16).json()["choices"][0]["text"]
    stop = text[3:6]
    assert stop and stop in text
    stopped = _completion(client, temperature=0, max_tokens=16, stop=[stop]).json()["choices"][0]
    assert stopped["finish_reason"] == "stop"
    assert stopped["text"] == text[: text.index(stop)]


def test_chat_uses_the_chat_template(client):
    response = client.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_tokens": 5,
    })  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    # Prompt tokens include the template's markup around both messages, not just the words.
    assert body["usage"]["prompt_tokens"] > len("Be brief. Hi".split()) + 4


def _sse_events(response: httpx.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]


def test_streaming_sends_incremental_chunks_then_done(client):
    with client.stream("POST", "/v1/completions", json={
        "model": MODEL, "prompt": "Hello", "max_tokens": 12, "stream": True, "temperature": 0,
    }) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    texts = [c["choices"][0]["text"] for c in chunks if c["choices"][0]["text"]]
    assert len(texts) >= 3  # tokens arrive as they are made, not in one piece
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    non_streamed = _completion(client, prompt="Hello", max_tokens=12, temperature=0).json()["choices"][0]["text"]
    assert "".join(texts) == non_streamed


def test_chat_streaming_starts_with_the_role(client):
    with client.stream("POST", "/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True,
    }) as response:  # fmt: skip
        events = _sse_events(response)
    first = json.loads(events[0])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-1] == "[DONE]"


def test_the_openai_client_library_works_unchanged(server):
    api = openai.OpenAI(base_url=f"{server.url}/v1", api_key=token())
    [model] = api.models.list().data
    assert model.id == MODEL
    completion = api.completions.create(model=MODEL, prompt="Reserved capacity", max_tokens=6)
    assert completion.usage.completion_tokens == 6
    stream = api.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=6, stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert "".join(pieces)


# Tokens are made when the test runs, not at collection: tokens minted then with a 5-minute
# expiry had expired by the time a long session reached these tests ("token expired").
@pytest.mark.parametrize(
    ("make_headers", "reason"),
    [
        (lambda: {}, "missing Authorization header"),
        (lambda: {"Authorization": "Basic abc"}, "Authorization must be 'Bearer <JWT>'"),
        (lambda: auth_headers(exp=int(time.time()) - 3600), "token expired"),
        (lambda: auth_headers(aud="someone-else"), "token audience is not accepted"),
        (lambda: auth_headers(iss="https://evil.test"), "token issuer is not accepted"),
        (lambda: auth_headers(exp=None), "token lacks the 'exp' claim"),
        (lambda: {"Authorization": "Bearer not.a.jwt"}, "invalid token"),
    ],
)
def test_auth_rejects_bad_tokens(server, make_headers, reason):
    response = httpx.post(f"{server.url}/v1/completions", headers=make_headers(),
                          json={"model": MODEL, "prompt": "x", "max_tokens": 1})  # fmt: skip
    assert response.status_code == 401
    assert response.json()["error"]["message"].startswith(reason)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_operations_endpoints_need_no_token(server):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{server.url}{path}").status_code == 200, path


def test_limits_answer_with_their_status_and_a_clear_message(client):
    too_big = client.post("/v1/completions", content=b"{" + b" " * 5000 + b"}",
                          headers={"content-type": "application/json"})  # fmt: skip
    assert too_big.status_code == 413
    assert "exceeds 4096 bytes" in too_big.json()["error"]["message"]
    long_prompt = _completion(client, prompt="capacity " * 200)
    assert long_prompt.status_code == 422
    assert re.match(r"prompt has \d+ tokens; the limit is 64", long_prompt.json()["error"]["message"])
    too_many = _completion(client, max_tokens=65)
    assert too_many.status_code == 422
    assert too_many.json()["error"]["message"] == "max_tokens 65 exceeds the limit of 64"
    bad_n = _completion(client, n=2)
    assert bad_n.status_code == 422 and bad_n.json()["error"]["param"] == "n"
    bad_temperature = _completion(client, temperature=5)
    assert bad_temperature.status_code == 422 and bad_temperature.json()["error"]["param"] == "temperature"
    unknown_model = _completion(client, model="gpt-4")
    assert unknown_model.status_code == 404 and unknown_model.json()["error"]["code"] == "model_not_found"


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_concurrent_requests_are_batched(server, client):
    before = httpx.get(f"{server.url}/metrics").text
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: _completion(client, prompt=f"request {i}", max_tokens=16), range(16)))
    assert all(r.status_code == 200 for r in responses)
    after = httpx.get(f"{server.url}/metrics").text
    batches = _metric(after, "inference_batch_size_count") - _metric(before, "inference_batch_size_count")
    requests = _metric(after, "inference_batch_size_sum") - _metric(before, "inference_batch_size_sum")
    assert requests == 16
    assert batches < 16  # at least one batch held several requests
    assert requests / batches > 1.5


def test_metrics_cover_latency_ttft_tokens_and_rejections(server, client):
    _completion(client)
    _completion(client, max_tokens=999)
    text = httpx.get(f"{server.url}/metrics").text
    assert 'inference_request_duration_seconds_count{route="/v1/completions",status="200"}' in text
    assert _metric(text, "inference_time_to_first_token_seconds_count") >= 1
    assert _metric(text, "inference_generated_tokens_total") >= 8
    assert _metric(text, "inference_prompt_tokens_total") >= 1
    assert 'inference_rejected_requests_total{reason="max_tokens_too_large"}' in text
    assert _metric(text, "inference_model_load_seconds") > 0
    assert "inference_queue_depth" in text


def test_openapi_document_describes_the_api(server):
    document = httpx.get(f"{server.url}/openapi.json").json()
    paths = document["paths"]
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/models", "/healthz", "/readyz", "/metrics"):
        assert path in paths, path
    completion = paths["/v1/completions"]["post"]
    assert set(completion["responses"]) >= {"200", "401", "413", "422", "429", "503", "504"}
    schema = document["components"]["schemas"]["CompletionRequest"]
    assert set(schema["properties"]) >= {"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "stream"}
    # Run-time facts are in the document: the one model served, and the token limit.
    assert schema["properties"]["model"]["enum"] == [MODEL]
    integer = next(b for b in schema["properties"]["max_tokens"]["anyOf"] if b.get("type") == "integer")
    assert integer["maximum"] == 64
