# The two commands a newcomer needs: `make demo` (the whole pipeline) and `make test` (the suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: env demo test

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

env: $(VENV)/.installed

demo: env
	$(VENV)/bin/tempme demo --workdir demo_out

test: env
	$(PY) -m pytest -q tests
