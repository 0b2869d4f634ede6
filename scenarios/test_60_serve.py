"""Step 60, serve: the server is ready, lists the model, answers plain and streamed chats, under load too."""

from concurrent.futures import ThreadPoolExecutor

PROMPT = [{"role": "user", "content": "Write one short sentence about the sea."}]


def test_readiness(deployment):
    names = [step.name for step in deployment.readiness]
    assert names[-1].startswith("a streamed chat completion"), f"readiness stopped early: {names}"


def test_models_lists_served_name(deployment):
    response = deployment.get("/v1/models")
    assert response.status_code == 200, f"/v1/models answered HTTP {response.status_code}: {response.text[:300]}"
    listed = [model["id"] for model in response.json()["data"]]
    assert deployment.model in listed, f"/v1/models lists {listed}, not '{deployment.model}'"


def test_chat_completion(deployment, recipe):
    reply = deployment.chat(PROMPT, max_tokens=recipe.expect.max_tokens, temperature=0)
    message = reply["choices"][0]["message"]
    assert (message.get("content") or "").strip(), f"empty content in a non-streamed reply: {reply}"
    assert reply["usage"]["completion_tokens"] > 0


def test_streamed_chat_completion(deployment, recipe):
    chunks = list(deployment.stream_chat(PROMPT, max_tokens=recipe.expect.max_tokens, temperature=0))
    content = "".join((choice.get("delta") or {}).get("content") or ""
                      for chunk in chunks for choice in chunk.get("choices", []))
    assert chunks, "the stream carried no chunk"
    assert content.strip(), f"streamed content is empty over {len(chunks)} chunks"


def test_concurrent_requests(deployment, recipe):
    count = recipe.expect.concurrent_requests

    def one(index: int) -> str:
        messages = [{"role": "user", "content": f"Request {index}: name a colour."}]
        reply = deployment.chat(messages, max_tokens=recipe.expect.max_tokens, temperature=0, timeout=300)
        return reply["choices"][0]["finish_reason"]

    with ThreadPoolExecutor(max_workers=count) as pool:
        outcomes = list(pool.map(lambda i: _attempt(one, i), range(count)))
    failures = [o for o in outcomes if isinstance(o, Exception)]
    assert not failures, f"{len(failures)}/{count} concurrent requests failed; first: {failures[0]!r}"


def _attempt(func, index):
    try:
        return func(index)
    except Exception as exc:  # noqa: BLE001 - every failure is counted and the first one reported
        return exc


def test_generation_tokens_metric_grows(deployment):
    name = "vllm:generation_tokens_total"
    before = deployment.metrics()
    assert name in before, f"/metrics does not expose {name}; it has {sorted(before)[:20]}..."
    deployment.chat(PROMPT, max_tokens=8, temperature=0)
    after = deployment.metrics()
    assert after[name] > before[name], f"{name} did not grow: {before[name]} -> {after[name]}"

