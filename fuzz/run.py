"""atheris entry point: ``python fuzz/run.py TARGET [libFuzzer flags] [corpus dirs]``.

The code under test is imported inside ``instrument_imports`` *before* the targets module, so
its bytecode carries coverage counters; numpy, zstandard and torch are imported first,
uninstrumented (instrumenting them costs about a minute of start-up and adds no useful edges).
"""

from __future__ import annotations

import os
import sys

import atheris
import crc32c  # noqa: F401
import ml_dtypes  # noqa: F401
import numpy  # noqa: F401
import zstandard  # noqa: F401

with atheris.instrument_imports(include=["avp_codec", "avp_runtime"]):
    import avp_runtime.handshake  # noqa: F401
    import avp_runtime.vocab  # noqa: F401

    import avp_codec  # noqa: F401

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import avp_fuzz  # noqa: E402


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in avp_fuzz.TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(avp_fuzz.TARGETS)}}} [libFuzzer flags] "
                 "[corpus dirs]")
    atheris.Setup([sys.argv[0], *sys.argv[2:]], avp_fuzz.TARGETS[sys.argv[1]])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
