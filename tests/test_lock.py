"""Every install resolves from the committed locks (see the Makefile's head).

uv.lock (the project), bench/litellm/uv.lock (the LiteLLM yardstick),
tests/integrations/langchain/uv.lock (LangChain, tests/test_langchain.py) and
requirements-uv.txt (uv itself) are written by `make lock`, on purpose; these
tests fail when one of them no longer says what pyproject.toml or the
Makefile asks for, or when a make target installs around them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UV = ROOT / ".uv" / "bin" / "uv"
MAKEFILE = (ROOT / "Makefile").read_text()



def uv(*args: str) -> subprocess.CompletedProcess[str]:
    assert UV.exists(), "uv is installed by `make install` (into .uv/)"
    return subprocess.run([str(UV), *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "UV_PYTHON_DOWNLOADS": "never",
                               "UV_PYTHON": sys.executable})


@pytest.mark.parametrize("project", [".", "bench/litellm", "tests/integrations/langchain"])
def test_the_lock_agrees_with_pyproject(project: str) -> None:
    # --offline: the lock is checked against pyproject.toml, nothing is resolved anew.
    out = uv("lock", "--check", "--offline", "--project", project)
    assert out.returncode == 0, f"{project}/pyproject.toml and its uv.lock disagree: run `make lock`\n{out.stderr}"


def test_the_venv_is_what_the_lock_says() -> None:
    out = uv("sync", "--check", "--locked", "--all-extras", "--offline")
    assert out.returncode == 0, f"the .venv differs from uv.lock: run `make install`\n{out.stderr}"


def test_uv_itself_is_pinned_with_hashes() -> None:
    version = re.search(r"^UV_VERSION := (\S+)$", MAKEFILE, re.MULTILINE)
    assert version is not None
    pinned = (ROOT / "requirements-uv.txt").read_text()
    assert re.search(rf"^uv=={re.escape(version[1])} ", pinned, re.MULTILINE), "requirements-uv.txt: run `make lock`"
    assert pinned.count("--hash=sha256:") >= 2
    assert uv("--version").stdout.split()[1] == version[1]


def test_every_install_in_the_makefile_uses_a_lock() -> None:
    recipes = [line.strip() for line in MAKEFILE.splitlines() if line.startswith("\t")]
    installs = [r for r in recipes if re.search(r"\bpip install\b|\buv (sync|pip install|add)\b|\$\(UV\) (sync|pip install)", r)]
    assert installs, "no install found: has the Makefile changed shape?"
    for recipe in installs:
        if "pip install" in recipe and "uv pip" not in recipe and "$(UV) pip" not in recipe:
            assert "--require-hashes" in recipe and "-r requirements-uv.txt" in recipe, recipe
        else:
            assert re.search(r"\bsync\b.*--locked", recipe), recipe


def test_the_lock_is_for_linux_and_python_311_on() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert lock["requires-python"] == ">=3.11"
    assert lock["supported-markers"] == ["sys_platform == 'linux'"]
    names = {p["name"] for p in lock["package"]}
    # The optional parts and the test tools come from the lock too.
    assert {"mypy", "types-psutil", "redis", "aiohttp", "wordllama", "usearch", "pytest"} <= names
