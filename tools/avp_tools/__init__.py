"""avp_tools: inspection tools for AVP messages (``avp-dump``).

Public API: :func:`walk` (the lenient structural walker behind every view) and the records it
returns.  The CLI lives in :mod:`avp_tools.dump_cli`.
"""

from ._model import EntryInfo, IndexInfo, Issue, LayerInfo, Span, SpanKind, TensorInfo, Walk
from ._spec import Limits
from ._walker import walk

__all__ = ["EntryInfo", "IndexInfo", "Issue", "LayerInfo", "Limits", "Span", "SpanKind",
           "TensorInfo", "Walk", "walk"]
