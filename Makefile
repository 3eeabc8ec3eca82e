# Two entry points for people (`make demo`, `make test`) and one for CI
# (`.ci/run` calls `make test`). Each creates .venv/ on first use and installs
# both distributions, editable, with everything they need.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench mutate stress install clean

install: $(STAMP)

$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e './client[progress,watch]' -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m claifd.demo

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/run.py

# The mutation guard: breaks each headline guarantee on purpose (the list is
# tests/mutations.toml) and fails if the tests named for it still pass.
mutate: $(STAMP)
	$(PY) tests/mutate.py

# Long fault runs (minutes, not part of `make test`): 100,000 malformed
# frames, 10,000 disconnects mid-stream, a client that never reads, kill -9
# under session writers. Prints its figures; exits 1 if a promise broke.
stress: $(STAMP)
	$(PY) tests/stress.py

clean:
	rm -rf $(VENV) build dist *.egg-info client/*.egg-info
