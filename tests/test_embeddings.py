"""Embeddings through the HTTP front (issue 29): OpenAI's shape, any
provider that serves them, cached exactly per input (the same text is never
paid for twice, across restarts too) and batched (one request's misses, and
those of requests arriving together, in one upstream call)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import httpx
import openai
import pytest

from claif_client import Client
from claif_sim.answers import embedding

from .conftest import Sim, sim_env
from .test_front import CLAUDE, Front

MODEL = "openai/text-embedding-3-small"


@pytest.fixture
def front(daemon_factory, sim: Sim) -> Iterator[Front]:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_SERVER__HTTP__ENABLED="true", CLAIF_SERVER__HTTP__LISTEN="127.0.0.1:0"))
    yield Front(d)
    assert d.stop() == 0


def _calls(sim: Sim) -> list[list[str]]:
    return [r["body"]["input"] for r in sim.requests() if r["path"] == "/v1/embeddings"]  # type: ignore[index,misc]


def test_embeddings_are_served_cached_per_input_and_never_paid_twice(front: Front, sim: Sim) -> None:
    oa = front.openai()
    first = oa.embeddings.create(model=MODEL, input=["alpha beta", "gamma delta"])  # the SDK asks for base64
    assert [d.embedding for d in first.data] == [embedding("alpha beta"), embedding("gamma delta")]
    assert first.usage.prompt_tokens == 4 and _calls(sim) == [["alpha beta", "gamma delta"]]
    floats = httpx.post(front.url + "/v1/embeddings", headers={"authorization": f"Bearer {front.token}"},
                        json={"model": MODEL, "input": "alpha beta", "encoding_format": "float"})
    assert floats.json()["data"][0]["embedding"] == embedding("alpha beta")
    assert floats.headers["x-claif-cache-status"] == "hit-exact" and floats.json()["usage"]["prompt_tokens"] == 0
    # One new text among known ones: only it goes upstream.
    mixed = oa.embeddings.with_raw_response.create(model=MODEL, input=["gamma delta", "epsilon", "alpha beta"])
    assert mixed.headers["x-claif-cached-inputs"] == "2/3"
    assert [d.embedding for d in mixed.parse().data] == [embedding(t) for t in ("gamma delta", "epsilon",
                                                                                "alpha beta")]
    assert _calls(sim)[-1] == ["epsilon"] and len(_calls(sim)) == 2
    # Other dimensions are another answer.
    oa.embeddings.create(model=MODEL, input="alpha beta", dimensions=32)
    assert sim.requests()[-1]["body"]["dimensions"] == 32 and len(_calls(sim)) == 3  # type: ignore[index]
    # Across a restart: from the disk tier.
    front.daemon.stop()
    front.daemon.start()
    again = Front(front.daemon).openai().embeddings.with_raw_response.create(model=MODEL, input=["alpha beta", "epsilon"])
    assert again.headers["x-claif-cache-status"] == "hit-exact" and len(_calls(sim)) == 3
    # Each upstream call is in the spend ledger, priced (text-embedding-3-small: $0.02 a million tokens).
    with Client(front.daemon.socket) as c:
        spent = c.spend()["today"]["by_model"][MODEL]
    assert spent["calls"] == 3 and spent["input_tokens"] == 4 + 1 + 2 and spent["usd"] > 0


def test_concurrent_requests_share_upstream_calls(front: Front, sim: Sim) -> None:
    oa = front.openai()
    texts = [f"text number {i}" for i in range(24)]
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda t: oa.embeddings.create(model=MODEL, input=[t, "shared text"]), texts))
    assert [a.data[0].embedding for a in answers] == [embedding(t) for t in texts]
    assert all(a.data[1].embedding == embedding("shared text") for a in answers)
    calls = _calls(sim)
    asked = [t for call in calls for t in call]
    assert sorted(asked) == sorted([*texts, "shared text"])  # each text paid once
    assert len(calls) < len(texts), len(calls)  # and batched


def test_embeddings_errors_are_clear(front: Front, sim: Sim) -> None:
    oa = front.openai()
    for bad, field in (({"input": [1, 2, 3]}, "input[0]"), ({"input": ""}, "input[0]"), ({"input": []}, "input"),
                       ({"input": "x", "dimensions": 0}, "dimensions"),
                       ({"input": "x", "encoding_format": "int8"}, "encoding_format")):
        answer = httpx.post(front.url + "/v1/embeddings", headers={"authorization": f"Bearer {front.token}"},
                            json={"model": MODEL, **bad})
        assert answer.status_code == 400 and field in answer.json()["error"]["message"], (bad, answer.text)
    with pytest.raises(openai.BadRequestError, match="serves no embeddings"):
        oa.embeddings.create(model=CLAUDE, input="x")
    sim.configure(embeddings_status=429, retry_after=0.01)
    with Client(front.daemon.socket) as c:
        c.config_set("retry.max_attempts", 2)
    with pytest.raises(openai.RateLimitError) as limited:
        oa.embeddings.create(model=MODEL, input="limited")
    assert limited.value.response.headers["x-should-retry"] == "false"
    assert sim.stats()["embeddings"] >= 2  # the daemon retried, once
