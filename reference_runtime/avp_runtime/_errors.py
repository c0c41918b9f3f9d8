"""One place that raises avp_codec.AvpError for the runtime, so every refusal carries its code."""

from __future__ import annotations

from typing import NoReturn

import avp_codec as avp


def fail(code: avp.ErrorCode, message: str, *, path: str = "") -> NoReturn:
    raise avp.AvpError(code, message, path=path)
