# `make book` builds the whole book (executing every chapter); `make test` runs
# every test. Both create .venv on first use; nothing needs installing by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= quick
# NUMERICS=emulated: MKL, ATen and oneDNN on their portable kernels, the arithmetic of another CPU
# (the same bits on every x86-64 CPU tried; 2-4x slower). native: this CPU's own kernels.
# `make book NUMERICS=emulated` builds every chapter so; `make test NUMERICS=emulated` (CI, .ci/run)
# runs the chapters whose claims rest on live training, EMULATED_CHAPTERS, so.
NUMERICS ?= native
EMULATED_CHAPTERS ?= 01,02,03,04,05
ifeq ($(NUMERICS),emulated)
NUMERIC_ENV := MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41
TEST_NUMERIC_ENV := PRUNEDYN_EMULATE_CHAPTERS=$(EMULATED_CHAPTERS)
else ifneq ($(NUMERICS),native)
$(error NUMERICS must be native or emulated, not $(NUMERICS))
endif
# MathJax served from the book itself (npm's mathjax package), so math renders offline.
MATHJAX_VERSION ?= 3.2.2
MATHJAX_DIR := .mathjax
MATHJAX     := $(MATHJAX_DIR)/.installed-$(MATHJAX_VERSION)
MATHJAX_ES5 := $(MATHJAX_DIR)/node_modules/mathjax/es5

.PHONY: book test test-fast venv clean help browser mathjax
help:
	@echo "make book   build the book (executes every chapter, profile $(PROFILE), NUMERICS=$(NUMERICS))"
	@echo "make test   run the full test suite"
	@echo "make test-fast   the tests not marked slow (the edit loop, about a minute)"
	@echo "make venv   only create the virtual environment"
	@echo "make mathjax   only install the MathJax copy the book serves (npm, into $(MATHJAX_DIR))"

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet -e '.[book,ray,test]'  # with its dependencies: pyproject declares them
	touch $(STAMP)

# The build copies $(MATHJAX_DIR)/static into _build/html/_static (html_static_path in _config.yml):
# tex-chtml.js with its fonts and the extensions it loads on demand.
mathjax: $(MATHJAX)

$(MATHJAX):
	@if ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; \
	  else echo "npm is needed to install MathJax for the book (apt-get install npm)"; exit 1; fi; \
	fi
	npm install --prefix $(MATHJAX_DIR) --no-save --no-audit --no-fund --loglevel=error mathjax@$(MATHJAX_VERSION)
	rm -rf $(MATHJAX_DIR)/static && mkdir -p $(MATHJAX_DIR)/static/mathjax/input $(MATHJAX_DIR)/static/mathjax/output
	cp $(MATHJAX_ES5)/tex-chtml.js $(MATHJAX_DIR)/static/mathjax/
	cp -r $(MATHJAX_ES5)/a11y $(MATHJAX_ES5)/ui $(MATHJAX_ES5)/sre $(MATHJAX_DIR)/static/mathjax/
	cp -r $(MATHJAX_ES5)/input/tex $(MATHJAX_DIR)/static/mathjax/input/
	cp -r $(MATHJAX_ES5)/output/chtml $(MATHJAX_DIR)/static/mathjax/output/
	rm -f $(MATHJAX_DIR)/.installed-* && touch $@

book: $(STAMP) $(MATHJAX)
	$(NUMERIC_ENV) $(VENV)/bin/prunedyn book --profile $(PROFILE)

# The browser test needs Debian's chromium; install it when we can (root).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "note: chromium/chromedriver missing and not root: the browser test will be skipped"; fi; \
	fi

test: $(STAMP) $(MATHJAX) browser
	PRUNEDYN_STRICT=1 PRUNEDYN_HEADLESS=1 $(TEST_NUMERIC_ENV) \
	  $(PY) -m pytest tests chapters -p chapters._pytest_numerics --nbval-lax --nbval-current-env \
	  --nbval-cell-timeout=900 $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow" -q $(PYTEST_ARGS)

clean:
	rm -rf runs _build .pytest_cache
