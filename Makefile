# Two entry points for people (`make demo`, `make test`) and one for CI
# (`.ci/run` calls `make test`). Each creates .venv/ on first use and installs
# both distributions, editable, with everything they need.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench mutate stress install clean system-tools user-install

install: $(STAMP)

$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e './client[progress,watch]' -e '.[test,all]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m claifd.demo

test: $(STAMP) system-tools
	$(PY) -m pytest
	@echo "the upstream suite again on the other upstream clients (pool.transport = aiohttp, then httpcore):"
	CLAIF_TEST_TRANSPORT=aiohttp $(PY) -m pytest -q tests/test_upstream.py tests/test_cache_e2e.py
	CLAIF_TEST_TRANSPORT=httpcore $(PY) -m pytest -q tests/test_upstream.py tests/test_cache_e2e.py

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
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/run.py

$(LITELLM):
	$(PYTHON) -m venv bench/.litellm
	bench/.litellm/bin/pip install --quiet 'litellm[proxy]'


# The mutation guard: breaks each headline guarantee on purpose (the list is
# tests/mutations.toml) and fails if the tests named for it still pass.
mutate: $(STAMP)
	$(PY) tests/mutate.py

# Long fault runs (minutes, not part of `make test`): 100,000 malformed
# frames, 10,000 disconnects mid-stream, a client that never reads, kill -9
# under session writers. Prints its figures; exits 1 if a promise broke.
stress: $(STAMP)
	$(PY) tests/stress.py

# `claif`, `claifd` and `claif-sim` on your PATH, from a venv of their own
# (a copy of this checkout: cleaning or moving it keeps them working; the
# systemd unit from `claifd install-user-units` uses the same venv).
USER_VENV := $(HOME)/.local/share/claifd/venv
user-install:
	$(PYTHON) -m venv $(USER_VENV)
	$(USER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(USER_VENV)/bin/python -m pip install --quiet './client[progress,watch]' '.[all]'
	mkdir -p $(HOME)/.local/bin
	for p in claif claifd claif-sim; do ln -sf $(USER_VENV)/bin/$$p $(HOME)/.local/bin/$$p; done
	@echo "claif, claifd and claif-sim are in ~/.local/bin (add it to PATH if your shell does not)"

clean:
	rm -rf $(VENV) build dist *.egg-info client/*.egg-info
