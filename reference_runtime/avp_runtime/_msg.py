"""Building messages from ``{MetaKey: value}`` maps (None values are left out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import avp_codec as avp


def build(kind: avp.Kind, values: Mapping[avp.MetaKey, Any],
          tensors: Sequence[avp.Tensor] = ()) -> avp.Message:
    # Entry.of takes the registry's type and critical flag; sorting by key is the canonical order.
    entries = [avp.Entry.of(key, values[key]) for key in sorted(values)
               if values[key] is not None]
    return avp.Message(kind=kind, entries=entries, layers=[], tensors=list(tensors))
