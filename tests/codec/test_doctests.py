"""The examples in the codec's docstrings run (issue 19: docstrings with examples a user can
trust). Every module of avp_codec is searched; the public entry points must carry examples."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import avp_codec as avp

MODULES = ["avp_codec", *(f"avp_codec.{m.name}" for m in pkgutil.iter_modules(avp.__path__))]
MUST_HAVE_EXAMPLES = [avp.Decoder, avp.StreamEncoder, avp.decode, avp.encode, avp.IndexedReader,
                      avp.Tensor.from_array, avp.from_canonical_json, avp.kv_cache_from_arrays]


def test_docstring_examples_run() -> None:
    attempted = 0
    for name in MODULES:
        mod = importlib.import_module(name)
        result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS, verbose=False)
        assert result.failed == 0, f"{name}: {result.failed} doctest failures (run it verbose)"
        attempted += result.attempted
    assert attempted >= 30


def test_entry_points_document_themselves() -> None:
    for obj in MUST_HAVE_EXAMPLES:
        assert obj.__doc__ and ">>>" in obj.__doc__, obj
    for method in (avp.Decoder.feed, avp.Decoder.next_event, avp.Decoder.end_of_input,
                   avp.StreamEncoder.write_tensor, avp.StreamEncoder.finish):
        assert method.__doc__ and len(method.__doc__) > 80, method
