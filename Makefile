# selectorkv: `make serve` and `make test` set everything up on a fresh machine.
#
# The virtual environment lives in .venv/ inside the checkout. Each target
# depends on a stamp file that records which extras were installed, so the
# first run installs and later runs start at once (until setup.cfg changes).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: serve test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The server alone: h11 and rocksdict.
$(VENV)/.installed-base: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

# Tests and linters on top.
$(VENV)/.installed-dev: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,lint]'
	touch $@ $(VENV)/.installed-base

serve: $(VENV)/.installed-base
	$(BIN)/selectorkv serve --data ./data $(ARGS)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check selectorkv tests
	$(BIN)/ruff format --check selectorkv tests
	$(BIN)/mypy selectorkv

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
