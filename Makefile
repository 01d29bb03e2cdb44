# The two commands a newcomer needs: `make demo` (the whole pipeline) and `make test` (the suite);
# `make test-fast` is the edit-test loop (every test not marked slow); both run `make lint` first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: env browser demo lint test test-fast

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# the build backend's notes on editable installs are not the user's business
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

env: $(VENV)/.installed

# Debian's Chromium, which the search page's test drives headless.
browser:
	@command -v chromium >/dev/null || $(SUDO) apt-get install -y -q chromium \
		|| ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

demo: env
	$(VENV)/bin/tempme demo --workdir demo_out

# ruff's rules are in pyproject.toml; where imports may sit is tests/test_layout.py's.
lint: env
	$(VENV)/bin/ruff check .

test: env browser lint
	$(PY) -m pytest -q tests

test-fast: env lint
	$(PY) -m pytest -q -m "not slow and not gpu" tests
