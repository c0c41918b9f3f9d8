"""Suite-wide settings.

Under CI (the CI variable set, as .ci/run's environment has it) hypothesis runs derandomized: the
property tests explore the same examples on every run, so a green CI means the same thing twice
and a red one can be reproduced. Locally they keep exploring new examples each run, which is how
the walker crashes fixed in this project were found.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
