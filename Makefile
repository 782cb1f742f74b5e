# `make book` builds the whole book (executing every chapter); `make test` runs
# every test. Both create .venv on first use; nothing needs installing by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= quick

.PHONY: book test test-fast venv clean help browser
help:
	@echo "make book   build the book (executes every chapter, profile $(PROFILE))"
	@echo "make test   run the full test suite"
	@echo "make test-fast   the tests not marked slow (the edit loop, about a minute)"
	@echo "make venv   only create the virtual environment"

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

book: $(STAMP)
	$(VENV)/bin/prunedyn book --profile $(PROFILE)

# The browser test needs Debian's chromium; install it when we can (root).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "note: chromium/chromedriver missing and not root: the browser test will be skipped"; fi; \
	fi

test: $(STAMP) browser
	$(PY) -m pytest tests chapters --nbval-lax --nbval-current-env --nbval-cell-timeout=900 $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow" -q $(PYTEST_ARGS)

clean:
	rm -rf runs _build .pytest_cache
