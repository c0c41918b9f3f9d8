"""avp_codec: the reference codec of AVP, the Agent Vector Protocol (format version 1.0).

Sans-IO core, explicit public API: everything a user needs is re-exported here; the
underscore modules are private. See spec/avp-spec.md for the normative format.
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
from ._events import NEED_DATA, EndEvent, HeaderEvent, TensorEvent
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
from ._whole import decode, decode_file
from .canonical_json import dumps_canonical_json, from_canonical_json, to_canonical_json
from .errors import AvpError
from .limits import Limits
from .model import Entry, Layer, Message, Quant, Tensor

__all__ = [
    "compress_message",
    "FORMAT_MAJOR", "FORMAT_MINOR", "VERSION_1_0",
    "Kind", "LayerKind", "Role", "Dtype", "Codec", "Layout", "QuantScheme", "MetaKey",
    "ValueType", "Mode", "ErrorCode", "SectionType",
    "AvpError", "Limits",
    "Entry", "Layer", "Quant", "Tensor", "Message",
    "kv_cache_message", "kv_cache_from_arrays", "text_message", "hidden_state_message",
    "hello_message", "accept_message", "error_message",
    "encode", "encode_to", "encode_into", "encoded_size", "StreamEncoder",
    "decode", "decode_file", "IndexedReader",
    "Decoder", "HeaderEvent", "TensorEvent", "EndEvent", "NEED_DATA",
    "to_canonical_json", "dumps_canonical_json", "from_canonical_json",
    "check_model_id", "resolve_mode", "verify_peer", "check_accept", "check_payload",
    "check_capabilities", "tokenizers_compatible", "decoded_token_strings", "decoded_token",
    "is_byte_level",
]
