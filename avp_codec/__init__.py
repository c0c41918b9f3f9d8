"""avp_codec: the reference codec of AVP, the Agent Vector Protocol (format version 1.0).

Sans-IO core, explicit public API: everything a user needs is re-exported here; the
underscore modules are private. See spec/avp-spec.md for the normative format.

Start here (docs/embedding.md walks through all of it, with examples the tests run):

* build: ``kv_cache_from_arrays`` (per-layer K/V arrays), ``kv_cache_message`` with ``Layer``
  and ``Tensor.from_array``, ``text_message``, ``hidden_state_message``, the handshake builders;
* write: ``encode`` (bytes), ``encode_into`` / ``encoded_size`` (your buffer), ``encode_to``
  (a writable), ``StreamEncoder`` (tensor by tensor, constant memory);
* read: ``decode`` / ``decode_file`` (whole), ``Decoder`` (incremental, events; one message or
  a stream of them), ``IndexedReader`` (random access through the index);
* canonical JSON (spec 18): ``write_canonical_json`` / ``iter_canonical_json`` (streamed,
  bounded memory), ``dumps_canonical_json`` (the text), ``to_canonical_json`` (Python objects),
  ``from_canonical_json`` (back to a message);
* errors ``AvpError`` / ``ErrorCode``, ``Limits``, authentication (``auth_key=``, ``keys=``),
  ``avp_codec.quant`` (quantized KV-caches), ``compress_message`` (lossless codecs),
  ``load_kernels`` (a server loads the optional compiled kernels at start-up).

>>> import avp_codec as avp
>>> print(avp.decode(avp.encode(avp.text_message("hello"))).get(avp.MetaKey.TEXT))
hello

Hostile input, at every entry point (``decode``, ``decode_file``, ``Decoder``, ``IndexedReader``,
``from_canonical_json``, ``write_canonical_json``, ``encode`` and its variants, ``StreamEncoder``,
the builders, the handshake helpers, the ``Tensor`` accessors):

* a fault in the input is an ``AvpError`` with its registry ``ErrorCode``, the offset and field
  path of spec 17.2; an argument of the wrong Python type is ``TypeError`` (``ValueError`` for a
  wrong length or rank), naming it; nothing else escapes, and nothing is coerced (``2.0`` is not
  an int, ``True`` not a 1, ``"ﬂoat16"`` not ``float16``);
* time is linear in the input (section walking is a loop, never recursion);
* memory is what the caller asked for (the input it handed over, the message or events returned,
  decompressed data up to each tensor's ``raw_length``, itself bounded by ``Limits``) plus at
  most 64 MB; nothing is allocated in proportion to a declared size before the limits of spec 16
  passed. tests/hardening/hostile_codec.py checks this under an address-space limit and
  benchmarks/results/hostile_codec.md records the worst case per entry point.
"""

from __future__ import annotations

from ._builders import (
    VERSION_1_0,
    accept_message,
    error_message,
    hello_message,
    hidden_state_message,
    kv_cache_from_arrays,
    kv_cache_message,
    text_message,
)
from ._encode import (
    StreamEncoder,
    compress_message,
    encode,
    encode_into,
    encode_to,
    encoded_size,
)
from ._events import (
    END_OF_STREAM,
    NEED_DATA,
    DescriptorEvent,
    EndEvent,
    HeaderEvent,
    TensorEvent,
)
from ._handshake import (
    check_accept,
    check_capabilities,
    check_model_id,
    check_payload,
    decoded_token,
    decoded_token_strings,
    is_byte_level,
    resolve_mode,
    tokenizers_compatible,
    verify_peer,
)
from ._incremental import Decoder
from ._random import IndexedReader
from ._registry import (
    FORMAT_MAJOR,
    FORMAT_MINOR,
    Codec,
    Dtype,
    ErrorCode,
    Kind,
    LayerKind,
    Layout,
    MetaKey,
    Mode,
    QuantScheme,
    Role,
    SectionType,
    ValueType,
)
from ._warm import load_kernels
from ._whole import decode, decode_file
from .canonical_json import (
    dumps_canonical_json,
    from_canonical_json,
    iter_canonical_json,
    to_canonical_json,
    write_canonical_json,
)
from .errors import AvpError
from .limits import Limits
from .model import Entry, Layer, Message, Quant, Tensor

__all__ = [
    "compress_message",
    "load_kernels",
    "FORMAT_MAJOR", "FORMAT_MINOR", "VERSION_1_0",
    "Kind", "LayerKind", "Role", "Dtype", "Codec", "Layout", "QuantScheme", "MetaKey",
    "ValueType", "Mode", "ErrorCode", "SectionType",
    "AvpError", "Limits",
    "Entry", "Layer", "Quant", "Tensor", "Message",
    "kv_cache_message", "kv_cache_from_arrays", "text_message", "hidden_state_message",
    "hello_message", "accept_message", "error_message",
    "encode", "encode_to", "encode_into", "encoded_size", "StreamEncoder",
    "decode", "decode_file", "IndexedReader",
    "Decoder", "HeaderEvent", "DescriptorEvent", "TensorEvent", "EndEvent", "NEED_DATA",
    "END_OF_STREAM",
    "to_canonical_json", "dumps_canonical_json", "from_canonical_json",
    "iter_canonical_json", "write_canonical_json",
    "check_model_id", "resolve_mode", "verify_peer", "check_accept", "check_payload",
    "check_capabilities", "tokenizers_compatible", "decoded_token_strings", "decoded_token",
    "is_byte_level",
]
