# The two commands a newcomer needs: `make demo` (the whole pipeline) and `make test` (the suite);
# `make test-fast` is the edit-test loop (every test not marked slow).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: env browser demo test test-fast

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

env: $(VENV)/.installed

# Debian's Chromium, which the search page's test drives headless.
browser:
	@command -v chromium >/dev/null || $(SUDO) apt-get install -y -q chromium \
		|| ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

demo: env
	$(VENV)/bin/tempme demo --workdir demo_out

test: env browser
	$(PY) -m pytest -q tests

test-fast: env
	$(PY) -m pytest -q -m "not slow and not gpu" tests
