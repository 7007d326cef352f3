# One target per habit. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: system-deps venv build test test-rust test-python demo bench bench-joblog bench-analytics bench-download soak lint clean

venv: $(VENV)/.installed

# The archive stand-in makes a throw-away CA with openssl; cargo builds the extension.
system-deps:
	@command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }
	@command -v cargo >/dev/null || { echo "cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }

$(VENV)/.installed: pyproject.toml | system-deps
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "maturin>=1.5,<2" "internetarchive>=5.0,<6" "requests>=2.25" "tqdm>=4.60" \
	    "pytest>=7" "hypothesis>=6.100" "pyyaml>=6"
	touch $@

build: venv
	cd $(CURDIR) && maturin develop --release --quiet

test-rust:
	cargo test --quiet

test-python: build
	$(PY) -m pytest -q -m "not soak"

# Style and types first: a red lint fails fast, before the long suites.
test: build lint test-rust test-python

demo: build
	$(PY) scripts/demo.py

bench-joblog: build
	$(PY) benches/joblog.py

bench-analytics: build
	$(PY) benches/analytics.py

bench-download: build
	$(PY) benches/download.py

bench: bench-joblog bench-analytics bench-download

soak: build
	$(PY) -m pytest -q -m soak

lint: build
	cargo fmt --check
	cargo clippy --all-targets --features python -- -D warnings
	$(PY) -m pip install -q ruff==0.17.6 mypy==2.4.1 types-requests==2.33.0.20261030 \
	    types-tqdm==4.70.0.20261106  # pinned: a new release must not turn CI red by itself
	$(PY) -m ruff check python tests benches
	$(PY) -m ruff format --check python tests benches
	$(PY) -m mypy
	$(PY) -m mypy.stubtest iabulk._native

clean:
	rm -rf target $(VENV) python/iabulk/*.so
