"""atheris entry point: ``python fuzz/run.py TARGET [libFuzzer flags] [corpus dirs]``.

The code under test is imported inside ``instrument_imports`` *before* the targets module, so
its bytecode carries coverage counters; numpy, zstandard and (for the runtime target) torch and
Transformers are imported first, uninstrumented (instrumenting them costs minutes of start-up
and adds no useful edges).
"""

from __future__ import annotations

import os
import sys

import atheris
import crc32c  # noqa: F401
import ml_dtypes  # noqa: F401
import numpy  # noqa: F401
import zstandard  # noqa: F401

# The compiled kernels' modules stay uninstrumented: numba compiles their functions from the
# bytecode, and atheris' coverage calls in it are not something numba can type. (Their numpy
# twins, which are instrumented, cover the same logic.)
KERNEL_MODULES = ["avp_codec._jit", "avp_codec._copy_kernels", "avp_codec._plane_kernels",
                  "avp_codec._quant_kernels"]

RUNTIME = len(sys.argv) > 1 and sys.argv[1] == "runtime"
if RUNTIME:
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: F401
    from transformers.cache_utils import DynamicCache  # noqa: F401

with atheris.instrument_imports(include=["avp_codec", "avp_runtime"],
                                exclude=KERNEL_MODULES):
    import avp_runtime.handshake  # noqa: F401
    import avp_runtime.vocab  # noqa: F401

    import avp_codec  # noqa: F401

    if RUNTIME:
        import avp_runtime.admit  # noqa: F401
        import avp_runtime.connector  # noqa: F401
        import avp_runtime.projection  # noqa: F401
        import avp_runtime.prompts  # noqa: F401

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import avp_fuzz  # noqa: E402
import avp_fuzz_runtime  # noqa: E402

TARGETS = {**avp_fuzz.TARGETS, **avp_fuzz_runtime.TARGETS}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags] "
                 "[corpus dirs]")
    target = TARGETS[sys.argv[1]]
    if RUNTIME:
        avp_fuzz_runtime.receiver()  # build the model before the first input is timed
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
