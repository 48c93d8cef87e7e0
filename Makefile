# Every target bootstraps .venv from nothing on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench bench-train clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: this pins the local CPU wheel, so nothing later pulls a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[all,test]'
	# The LiteRT converter without its declared dependencies (see the 'litert' extra in pyproject).
	$(BIN)/python -m pip install -q --no-deps 'litert-torch==0.10.*' 'litert-converter==0.5.*'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m distilmarco.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src benchmarks

# The map and search-page tests drive Debian's Chromium headless (never a downloaded browser).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# pytest-xdist processes (0: none). Under --dist loadgroup a worker takes a whole xdist_group
# (tests sharing a heavy session fixture or export) or a whole module, heaviest first
# (tests/xdist_units.py).
WORKERS ?= 2
PYTEST := $(BIN)/pytest -q -n $(WORKERS) --dist loadgroup

# Everything, slow tests included (real data, full-size models, exports, live servers).
test: lint chromium
	$(PYTEST)

# The same minus the tests marked slow (each over a few seconds): a quick check while editing.
test-fast: lint chromium
	$(PYTEST) -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# Fine-tuning results alone (STS-B, Cranfield, speed against sentence-transformers' trainer).
bench-train: $(STAMP)
	$(BIN)/python -m benchmarks.run --only train

clean:
	rm -rf $(VENV) build *.egg-info
