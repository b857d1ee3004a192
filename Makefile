# The two set-up commands: `make serve` and `make test`. Both create .venv and install into it once;
# llama-cpp-python compiles on the first install and pip's wheel cache (~/.cache/pip) reuses it afterwards.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test bench bench-tools lint clean services model browser lock image-base image node-tools soak

# llama-cpp-python is compiled once per machine into a wheelhouse of our own, with flags pip's wheel cache would not
# tell apart: ggml's AMX kernels crash on Intel Sapphire Rapids hosts in their first matrix multiply
# (ggml-org/llama.cpp#20824), so they are left out; -march=native keeps every other instruction set of the host.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CPU_FLAGS := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
WHEELHOUSE ?= $(HOME)/.cache/upcoach-wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-noamx

$(WHEELHOUSE)/.built:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet "pip>=24"
	mkdir -p $(WHEELHOUSE)
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	CMAKE_ARGS="-DCMAKE_C_FLAGS='$(LLAMA_CPU_FLAGS)' -DCMAKE_CXX_FLAGS='$(LLAMA_CPU_FLAGS)'" \
		$(BIN)/python -m pip wheel --quiet --no-cache-dir --no-deps "llama-cpp-python==$(LLAMA_CPP_VERSION)" -w $(WHEELHOUSE)
	touch $@

$(STAMP): pyproject.toml clients/python/pyproject.toml deploy/requirements.lock $(WHEELHOUSE)/.built
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet "pip>=24"
	$(BIN)/python -m pip install --quiet --find-links $(WHEELHOUSE) -c deploy/requirements.lock \
		"llama-cpp-python==$(LLAMA_CPP_VERSION)" -e '.[dev]' -e ./clients/python
	touch $(STAMP)

# The pinned runtime set (what the image installs, and what `make install` is constrained to). After changing
# pyproject.toml's dependencies: `make lock`, then commit deploy/requirements.lock.
lock: install
	$(BIN)/python -m pip install --quiet "uv>=0.4"
	$(BIN)/uv pip compile pyproject.toml --extra otel --python-version 3.11 \
		--python-platform x86_64-unknown-linux-gnu --annotation-style line -o deploy/requirements.lock

install: $(STAMP)

model: install
	$(BIN)/upcoach models path

serve: install
	$(BIN)/upcoach serve

services:
	./scripts/ensure-services.sh

# The dashboard's browser tests drive Debian's chromium through Playwright (no browser download is possible here).
browser:
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

# openapi-typescript and tsc for the typed-spec check (tests/api/test_openapi_types.py), pinned by the lock file.
node-tools:
	test -x clients/typescript/node_modules/.bin/tsc || (cd clients/typescript && npm ci --no-audit --no-fund)

test: install services model browser node-tools
	$(BIN)/python -m pytest

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

# The gateway benchmark's peer, LiteLLM's proxy, gets a venv of its own so its dependencies never meet ours.
LITELLM_VENV := benchmarks/.peers/litellm-venv

$(LITELLM_VENV)/.installed: benchmarks/litellm-requirements.txt
	test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet -r benchmarks/litellm-requirements.txt
	touch $@

# wrk is the load generator (Debian's package; the machines run as root, so apt-get needs no sudo).
bench-tools: $(LITELLM_VENV)/.installed
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

bench: $(VENV)/.bench-installed model bench-tools
	$(BIN)/python benchmarks/run.py

# The soak (docs/reliability.md): the mixed load on the real model for SOAK_S seconds (default 30 min); fails on
# unbounded growth. `make soak SOAK_S=300` for a short one.
SOAK_S ?= 1800
soak: $(VENV)/.bench-installed model services
	$(BIN)/python benchmarks/soak.py --seconds $(SOAK_S)

# The container image (docs/deploy.md). image-base makes the Debian base from the mirror where no registry is
# reachable; image reuses the host's compiled llama-cpp-python wheel (portable builds: leave deploy/wheelhouse empty).
image-base:
	podman image exists docker.io/library/debian:bookworm-slim || ./deploy/make-base-image.sh

image:
	cp $(WHEELHOUSE)/llama_cpp_python-*.whl deploy/wheelhouse/
	podman build --format docker -f deploy/Dockerfile -t localhost/upcoach:latest --build-arg BUILD=$$(git rev-parse --short HEAD) .

lint: install
	$(BIN)/ruff check src tests benchmarks clients
	$(BIN)/ruff format --check src tests benchmarks clients

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
