"""Regenerate the frozen AVP conformance vectors (conformance/vectors/). See
avp_conform.generate; frozen vectors of a released format version never change their bytes."""

import sys

from avp_conform.generate import main

if __name__ == "__main__":
    sys.exit(main())
