# `make book` builds the whole book (executing every chapter); `make test` runs
# every test. Both create .venv on first use; nothing needs installing by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= quick

.PHONY: book test venv clean help
help:
	@echo "make book   build the book (executes every chapter, profile $(PROFILE))"
	@echo "make test   run the full test suite"
	@echo "make venv   only create the virtual environment"

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

book: $(STAMP)
	$(VENV)/bin/prunedyn run mlp-mnist --out runs/mlp-mnist --resume

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf runs _build .pytest_cache
