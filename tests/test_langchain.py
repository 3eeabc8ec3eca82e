"""LangChain through the HTTP front (issue 29), in a venv of its own
(tests/.langchain, from tests/integrations/langchain/uv.lock; built here when
missing): `with_structured_output` against a Claude model through the OpenAI
wire, with its default method and the others, and a plain call from
langchain-anthropic to an OpenAI model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Sim, sim_env
from .test_front import CLAUDE, GPT, Front

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "tests" / ".langchain"

SCRIPT = r"""
import json, sys
from typing import Optional
from pydantic import BaseModel
from langchain_openai import ChatOpenAI
from langchain_anthropic import ChatAnthropic

url, token, claude, gpt = sys.argv[1:5]


class Person(BaseModel):
    name: str
    age: int
    email: Optional[str] = None


out = {}
llm = ChatOpenAI(base_url=url + "/v1", api_key=token, model=claude, max_retries=0)
for method in ("default", "json_schema", "function_calling", "json_mode"):
    kwargs = {} if method == "default" else {"method": method}
    structured = llm.with_structured_output(Person, **kwargs) if method != "json_mode" else \
        llm.with_structured_output(None, method="json_mode")
    answer = structured.invoke(f"Ada Lovelace, 36 ({method}); answer in JSON")
    out[method] = answer.model_dump() if isinstance(answer, BaseModel) else answer
chunks = [c for c in llm.with_structured_output(Person).stream("streamed Ada")]
out["streamed"] = chunks[-1].model_dump()
plain = ChatAnthropic(base_url=url, api_key=token, model=gpt, max_retries=0).invoke("hello from langchain")
out["anthropic_to_gpt"] = plain.content
print(json.dumps(out))
"""


def _venv_python() -> Path:
    uv = ROOT / ".uv" / "bin" / "uv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(VENV), "UV_PYTHON_DOWNLOADS": "never"}
    subprocess.run([str(uv) if uv.exists() else "uv", "sync", "--quiet", "--locked", "--project",
                    str(ROOT / "tests" / "integrations" / "langchain"), "--python", sys.executable],
                   env=env, check=True, timeout=600)
    return VENV / "bin" / "python"


@pytest.fixture
def front(daemon_factory, sim: Sim) -> Iterator[Front]:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_SERVER__HTTP__ENABLED="true", CLAIF_SERVER__HTTP__LISTEN="127.0.0.1:0"))
    yield Front(d)
    assert d.stop() == 0


def test_langchain_structured_output_against_claude_through_the_openai_wire(front: Front, sim: Sim) -> None:
    python = _venv_python()
    run = subprocess.run([str(python), "-c", SCRIPT, front.url, front.token, CLAUDE, GPT], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for method in ("default", "json_schema", "function_calling"):
        person = out[method]
        assert person["name"].startswith("Ada Lovelace, 36") and isinstance(person["age"], int), (method, person)
    assert isinstance(out["json_mode"], dict) and out["json_mode"]
    assert out["streamed"]["name"] == "streamed Ada"
    assert out["anthropic_to_gpt"] == "Simulated reply to: hello from langchain"
    # The default (json_schema) reached Claude as the forced output tool.
    bodies = [r["body"] for r in sim.requests() if r["path"] == "/v1/messages"]
    assert any((b.get("tool_choice") or {}).get("name") == "claif_structured_output" for b in bodies)
