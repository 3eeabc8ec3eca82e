# Two entry points for people (`make demo`, `make test`) and one for CI
# (`.ci/run` calls `make test`). Each creates .venv/ on first use and installs
# both distributions, editable, with everything they need.
#
# Every install here resolves from a committed lock of exact versions with
# hashes: uv.lock for the project (uv sync --locked), bench/litellm/uv.lock for
# the LiteLLM yardstick, requirements-uv.txt for uv itself (pip --require-hashes,
# into .uv/). `make lock` refreshes them on purpose; tests/test_lock.py fails
# when pyproject.toml and uv.lock disagree.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# The one place uv's version is chosen (`make lock` writes requirements-uv.txt from it).
UV_VERSION := 0.13.9
UV     := .uv/bin/uv
# Never fetch a Python: use the machine's.
export UV_PYTHON_DOWNLOADS := never
# Byte-compile at install, as pip does: with PYTHONDONTWRITEBYTECODE set, every
# daemon the tests start would otherwise compile its imports from source.
export UV_COMPILE_BYTECODE := 1

.PHONY: demo test bench mutate stress install clean system-tools user-install lock eval-semantic

install: $(STAMP)

$(UV): requirements-uv.txt
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet --no-deps --require-hashes -r requirements-uv.txt
	touch $(UV)

$(STAMP): pyproject.toml client/pyproject.toml uv.lock $(UV)
	$(UV) sync --quiet --locked --all-extras --python $(PYTHON)
	touch $(STAMP)

# Refresh the locks on purpose: every dependency to its newest release that
# pyproject.toml allows (see README, "Upgrading a dependency").
lock: $(UV)
	echo 'uv==$(UV_VERSION)' | $(UV) pip compile --quiet --universal --generate-hashes --no-header - -o requirements-uv.txt
	$(UV) lock --upgrade
	$(UV) lock --upgrade --project bench/litellm
	$(UV) lock --upgrade --project tests/integrations/langchain

demo: $(STAMP)
	$(PY) -m claifd.demo

test: $(STAMP) system-tools
	$(PY) -m pytest

# The unit checks need systemd's tools (systemd-analyze, systemd-socket-activate):
# installed with apt when missing and run as root, else their tests say why they skip.
system-tools:
	@if ! command -v systemd-analyze >/dev/null || ! command -v systemd-socket-activate >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing systemd's tools with apt"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; \
	  else \
	    echo "make test: systemd-analyze or systemd-socket-activate is missing and this is not root:"; \
	    echo "  the systemd unit tests will be skipped (install the systemd package to run them)"; \
	  fi; \
	fi
	@if ! command -v redis-server >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing redis-server with apt (the Redis backend's tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "make test: redis-server is missing and this is not root:"; \
	    echo "  the Redis backend's tests will be skipped (install redis-server to run them)"; \
	  fi; \
	fi

# LiteLLM's proxy is only a yardstick of bench/bench_front.py: it gets a venv
# of its own (bench/.litellm), never the project's.
LITELLM := bench/.litellm/bin/litellm

bench: $(STAMP) $(LITELLM)
	$(PY) bench/run.py

$(LITELLM): bench/litellm/uv.lock $(UV)
	UV_PROJECT_ENVIRONMENT=$(CURDIR)/bench/.litellm $(UV) sync --quiet --locked --project bench/litellm --python $(PYTHON)
	touch $(LITELLM)


# The mutation guard: breaks each headline guarantee on purpose (the list is
# tests/mutations.toml) and fails if the tests named for it still pass.
mutate: $(STAMP)
	$(PY) tests/mutate.py

# The semantic tier's precision and recall per category and embedder, on the
# half of tests/data/semantic_eval.json its thresholds were not calibrated on.
eval-semantic: $(STAMP)
	$(PY) -m claifd.semantic.evaluate

# Long fault runs (minutes, not part of `make test`): 100,000 malformed
# frames, 10,000 disconnects mid-stream, a client that never reads, kill -9
# under session writers. Prints its figures; exits 1 if a promise broke.
stress: $(STAMP)
	$(PY) tests/stress.py

# `claif`, `claifd` and `claif-sim` on your PATH, from a venv of their own
# (a copy of this checkout: cleaning or moving it keeps them working; the
# systemd unit from `claifd install-user-units` uses the same venv).
USER_VENV := $(HOME)/.local/share/claifd/venv
user-install: $(UV)
	UV_PROJECT_ENVIRONMENT=$(USER_VENV) $(UV) sync --quiet --locked --no-editable --extra all --python $(PYTHON)
	mkdir -p $(HOME)/.local/bin
	for p in claif claifd claif-sim; do ln -sf $(USER_VENV)/bin/$$p $(HOME)/.local/bin/$$p; done
	@echo "claif, claifd and claif-sim are in ~/.local/bin (add it to PATH if your shell does not)"

clean:
	rm -rf $(VENV) .uv build dist *.egg-info client/*.egg-info
