"""Random JSON at every route (issue 30): every malformed request is a 4xx
naming its field, on both wires, from the front and from the simulator,
and neither ever stops serving. Seeded: a failure names its seed."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from claif_client import Client

from .conftest import DaemonProcess, Sim, sim_env

# Values a field may be replaced by: every JSON type, and shapes one level deep.
VALUES: list[Any] = [None, True, 5, -1, 1.5, "", "x", [], [1], [None], {}, {"a": 1}, [{"type": "text"}],
                     [{"type": 5}], {"type": "function", "function": True}, {"type": "tool"}, [{"x": {}}]]
CHAT = {"model": "openai/gpt-4o-mini", "max_tokens": 5, "stop": ["x"], "n": 1, "stream": False,
        "messages": [{"role": "system", "content": "s"},
                     {"role": "user", "content": [{"type": "text", "text": "q"},
                                                  {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]},
                     {"role": "assistant", "content": None, "tool_calls": [
                         {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                     {"role": "tool", "tool_call_id": "c1", "content": "r"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}}, "response_format": {"type": "json_object"}}
MESSAGES = {"model": "anthropic/claude-x", "max_tokens": 5, "system": [{"type": "text", "text": "s"}],
            "stop_sequences": ["x"], "stream": False,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}, {"type": "image", "source": {
                "type": "base64", "media_type": "image/png", "data": "AA=="}}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "auto"}}
ROUTES = {"/v1/chat/completions": CHAT, "/v1/messages": MESSAGES, "/v1/messages/count_tokens": MESSAGES}
MODELS = ["echo/x", "openai/gpt-4o-mini", "anthropic/claude-x"]


def mutate(rng: random.Random, doc: Any) -> Any:
    """`doc` with one value somewhere replaced (and maybe one below it)."""
    if isinstance(doc, dict) and doc and rng.random() < 0.75:
        key = rng.choice(list(doc))
        return {**doc, key: mutate(rng, doc[key]) if rng.random() < 0.6 else rng.choice(VALUES)}
    if isinstance(doc, list) and doc and rng.random() < 0.75:
        i = rng.randrange(len(doc))
        return [*doc[:i], mutate(rng, doc[i]) if rng.random() < 0.6 else rng.choice(VALUES), *doc[i + 1:]]
    return rng.choice(VALUES)


def cases(seed: int, per_route: int) -> Iterator[tuple[str, Any]]:
    rng = random.Random(seed)
    for path, base in ROUTES.items():
        for _ in range(per_route):
            doc = mutate(rng, {**base, "model": rng.choice(MODELS), "stream": rng.random() < 0.3})
            yield path, doc


@pytest.fixture
def front_socket(daemon_factory, sim: Sim) -> Iterator[tuple[DaemonProcess, str]]:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_SERVER__HTTP__ENABLED="true", CLAIF_RETRY__MAX_ATTEMPTS="1"))
    with Client(d.socket) as c:
        socket = c.status()["http"]["socket"]
    yield d, socket
    assert d.stop() == 0


@pytest.mark.parametrize("seed", [1, 2])
def test_random_json_at_every_route_is_a_4xx_never_a_500(front_socket: tuple[DaemonProcess, str], sim: Sim,
                                                         seed: int) -> None:
    daemon, socket = front_socket
    failures = []
    with httpx.Client(transport=httpx.HTTPTransport(uds=socket), base_url="http://claifd", timeout=30) as http:
        for path, doc in cases(seed, 400):
            r = http.post(path, json=doc)
            # 502-504 are an upstream's failures, passed on; a 500 is ours.
            if r.status_code == 500 or r.status_code >= 505:
                failures.append((path, r.status_code, r.text[:200], doc))
        assert not failures, f"seed {seed}: {len(failures)} server errors, first: {failures[0]}"
        assert http.get("/v1/models").status_code == 200  # still serving
    assert sim.proc.poll() is None, "the simulator exited"
    assert not [e for e in daemon.logs() if e.get("event") == "HTTP front request failed"]


def test_a_bad_field_is_named(front_socket: tuple[DaemonProcess, str]) -> None:
    _, socket = front_socket
    with httpx.Client(transport=httpx.HTTPTransport(uds=socket), base_url="http://claifd") as http:
        r = http.post("/v1/chat/completions", json={"model": "echo/x", "messages": [
            {"role": "system", "content": 5}, {"role": "user", "content": "q"}]})
        assert r.status_code == 400 and "messages[0].content" in r.json()["error"]["message"]
        r = http.post("/v1/chat/completions", json={"model": "echo/x", "messages": [{"role": "user", "content": "q"}],
                                                    "tools": [{"type": "function", "function": True}]})
        assert r.status_code == 400 and "tools[0].function" in r.json()["error"]["message"]
        r = http.post("/v1/messages", json={"model": "echo/x", "max_tokens": 5, "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": 7}]}]})
        assert r.status_code == 400 and "messages[0].content[0].tool_use_id" in r.json()["error"]["message"]


@pytest.mark.parametrize("seed", [3])
def test_the_simulator_answers_400_and_serves_on(sim: Sim, seed: int) -> None:
    headers = {"authorization": "Bearer k", "x-api-key": "k", "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=sim.url, headers=headers, timeout=30) as http:
        r = http.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "q"}],
                                                    "tools": [{"type": "function", "function": True}]})
        assert r.status_code == 400
        for path, doc in cases(seed, 300):
            if path.endswith("count_tokens"):
                continue
            status = http.post(path, json=doc).status_code
            assert status in (200, 400, 401), (path, status, doc)
            assert sim.proc.poll() is None, doc
