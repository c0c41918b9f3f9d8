"""The reference testee: avp_codec behind TESTEE-PROTOCOL.md (both tiers).

    python -m avp_conform.reference_testee            persistent tier
    python -m avp_conform.reference_testee decode ... simple tier (see the protocol, section 2)

``--break NAME`` turns it into a deliberately broken implementation, so that the suite can prove it
catches real bugs: ``ignore-data-crc`` never verifies tensor CRCs, ``accept-trailing`` ignores
bytes after the Trailer, ``dequantize-binary64`` dequantizes with one rounding at the end (the
mistake R-12.6 forbids), ``json-text-as-string`` answers decode with the canonical JSON as a
string, ``crash-on:GLOB`` / ``hang-on:GLOB`` exit / stall on matching case ids (harness
tests).
"""

from __future__ import annotations

import fnmatch
import json
import os
import struct
import sys
import time
from typing import IO, Any

import avp_codec as avp

from .testee import PROTOCOL_MINOR, read_frame, write_frame

NAME = "avp_codec reference"


def capabilities() -> dict[str, Any]:
    """Everything, in the protocol's lower-case names (TESTEE-PROTOCOL 1.5)."""
    return {
        "operations": ["decode", "encode", "dequantize"],
        "kinds": [k.name.lower() for k in avp.Kind],
        "dtypes": [d.name.lower() for d in avp.Dtype],
        "codecs": [c.name.lower() for c in avp.Codec],
        "features": ["unverified", "limits", "auth", "model_check", "handshake"],
    }


def start_object(breaks: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"avp_testee": 1, "minor": PROTOCOL_MINOR, "name": NAME, "version": _version(breaks),
            "capabilities": capabilities()}


def _keys(context: dict[str, Any]) -> dict[bytes, bytes]:
    return {bytes.fromhex(k): bytes.fromhex(v) for k, v in context.get("keys", {}).items()}


def _hex(value: Any) -> bytes | None:
    return bytes.fromhex(value) if value else None


def _local_hello(local: dict[str, Any]) -> avp.Message:
    """The testee's own HELLO, as TESTEE-PROTOCOL 1.4 describes it from ``local``."""
    limit = local.get("max_message_bytes")
    return avp.hello_message("conformance-receiver", versions=local["versions"],
                             max_message_bytes=(1 << 64) - 1 if limit is None else limit,
                             dtypes=local["dtypes"], codecs=local["codecs"],
                             modes=local["modes"], model_id=_hex(local.get("model_id")),
                             tokenizer_id=_hex(local.get("tokenizer_id")),
                             vocabulary=_hex(local.get("vocabulary")),
                             nonce=_hex(local["nonce"]))


def decode_with_context(data: bytes, context: dict[str, Any], breaks: tuple[str, ...] = ()
                        ) -> avp.Message:
    """Decode as a receiver configured by the request context (TESTEE-PROTOCOL 1.3, 1.4)."""
    limits = avp.Limits(**context.get("limits", {}))
    verify = context.get("verify", True) and "ignore-data-crc" not in breaks
    kwargs = {"verify": verify, "limits": limits, "keys": _keys(context),
              "require_auth": bool(context.get("require_auth", False))}
    try:
        msg = avp.decode(data, **kwargs)  # type: ignore[arg-type]
    except avp.AvpError as exc:
        if "accept-trailing" in breaks and exc.code == avp.ErrorCode.TRAILING_BYTES \
                and exc.offset is not None:
            msg = avp.decode(data[:exc.offset], **kwargs)  # type: ignore[arg-type]
        else:
            raise
    local = context.get("local")
    if local is not None and check_session(msg, local, len(data)):
        return msg  # a handshake message, or an ERROR ending one: no identity to check
    model_id = _hex(context.get("expected_model_id")) or _hex((local or {}).get("model_id"))
    tokenizer_id = (_hex(context.get("expected_tokenizer_id"))
                    or _hex((local or {}).get("tokenizer_id")))
    if model_id is not None:  # R-14.8 (TESTEE-PROTOCOL 1.3)
        avp.check_model_id(msg, model_id, tokenizer_id)
    elif tokenizer_id is not None and msg.kind == avp.Kind.HIDDEN_STATE \
            and msg.get(avp.MetaKey.HIDDEN_SOURCE) == 2 \
            and msg.get(avp.MetaKey.PROJ_TARGET_TOKENIZER_ID) != tokenizer_id:
        raise _fail(avp.ErrorCode.MODEL_MISMATCH, "projection made for another tokenizer")
    return msg


def _fail(code: avp.ErrorCode, text: str) -> avp.AvpError:
    return avp.AvpError(code, text)


def check_session(msg: avp.Message, local: dict[str, Any], size: int) -> bool:
    """The receiver's checks of spec 14.2-14.3 for the state ``local`` describes
    (TESTEE-PROTOCOL 1.4). Returns True when the message is not a payload (a handshake
    message, or the ERROR that ends one), so the identity checks do not apply."""
    hello = _local_hello(local)
    mode, kind, E = local.get("session_mode"), msg.kind, avp.ErrorCode
    if mode is None:  # WAIT_HELLO or WAIT_ACCEPT
        expected = avp.Kind.HELLO if local["role"] == "responder" else avp.Kind.ACCEPT
        if kind == expected:
            avp.verify_peer(hello, msg, expected)  # spec 14.3 steps 3-8, in order
            return True
        if kind == avp.Kind.ERROR and expected == avp.Kind.ACCEPT:
            return True  # the handshake ends with the peer's ERROR_CODE
        raise _fail(E.KIND_CONSTRAINT, f"{kind.name} where {expected.name} belongs")
    if kind == avp.Kind.HELLO:  # renegotiation: checked as a responder, whatever the role
        avp.verify_peer(hello, msg, avp.Kind.HELLO)
        return True
    # check_payload: R-14.6 (kind), then R-14.7 (size, dtypes, codecs).
    avp.check_payload(msg, avp.Mode(mode), hello, size)
    return False


def _entry_value(vtype: Any, value: Any) -> Any:
    if vtype == "bytes" or isinstance(vtype, int):
        return bytes.fromhex(value)
    if vtype == "u32_list":
        return tuple(value)
    if vtype == "f64":
        return float(value)  # float("NaN"), float("Infinity") parse the special strings
    return value


def message_from_json(doc: dict[str, Any], stored: bytes) -> avp.Message:
    """Rebuild a message from its canonical JSON and the tensors' stored bytes (encode op)."""
    entries = [avp.Entry(e["key"], avp.ValueType[e["type"].upper()]
                         if isinstance(e["type"], str) else e["type"],
                         _entry_value(e["type"], e["value"]), e["critical"])
               for e in doc["entries"]]
    layers = [avp.Layer(la["layer_index"], avp.LayerKind[la["layer_kind"]], la["token_start"],
                        la["token_count"], la["window"]) for la in doc["layers"]]
    tensors, at = [], 0
    for t in doc["tensors"]:
        q = t["quant"]
        quant = None if q is None else avp.Quant(
            avp.QuantScheme[q["scheme"]], q["axis"], q["group_size"], q["scale_tensor"],
            q["zero_point_tensor"], avp.Dtype[q["dequant_dtype"].upper()])
        data = stored[at:at + t["stored_length"]]
        at += t["stored_length"]
        tensors.append(avp.Tensor(avp.Role[t["role"]], avp.Dtype[t["dtype"].upper()],
                                  tuple(t["shape"]), data, layer=t["layer"],
                                  codec=avp.Codec[t["codec"].upper()],
                                  layout=avp.Layout[t["layout"]], token_offset=t["token_offset"],
                                  quant=quant, raw_length=t["raw_length"]))
    if at != len(stored):
        raise ValueError(f"{len(stored) - at} stored bytes left over")
    return avp.Message(avp.Kind[doc["kind"]], entries, layers, tensors)


def encode_from_json(doc: dict[str, Any], stored: bytes, context: dict[str, Any]) -> bytes:
    msg = message_from_json(doc, stored)
    key_id = msg.get(avp.MetaKey.AUTH_KEY_ID)
    held = _keys(context)
    auth = (key_id, held[key_id]) if isinstance(key_id, bytes) and key_id in held else None
    return avp.encode(msg, auth_key=auth)


def _error(exc: avp.AvpError) -> dict[str, Any]:
    return {"status": "error", "code": int(exc.code), "name": exc.code.name,
            "offset": exc.offset, "path": exc.path}


def dequantize(data: bytes, index: int, context: dict[str, Any], breaks: tuple[str, ...]
               ) -> tuple[dict[str, Any], bytes]:
    """Protocol 1.1: decode as for a decode request, then spec 12.2 on tensor ``index``."""
    from avp_codec import quant  # numpy and ml_dtypes: only a dequantize request pays for them

    msg = decode_with_context(data, context, breaks)
    if not 0 <= index < len(msg.tensors):
        raise _fail(avp.ErrorCode.BAD_REFERENCE, f"no tensor {index}")
    values = quant.dequantize_tensor(msg, index)
    t = msg.tensors[index]
    if "dequantize-binary64" in breaks and t.quant is not None:
        values = _binary64_dequantize(msg, index, values.dtype)
    dtype = t.quant.dequant_dtype if t.quant is not None else t.dtype
    return ({"dtype": avp.Dtype(dtype).name.lower(), "shape": list(t.shape)},
            values.astype(values.dtype.newbyteorder("<")).tobytes())


def _binary64_dequantize(msg: avp.Message, index: int, out: Any) -> Any:
    """A deliberately wrong dequantization for harness tests: (q - z) * s computed in binary64
    and rounded once, where spec 12.2 rounds to binary32 after each operation."""
    import numpy as np
    t = msg.tensors[index]
    assert t.quant is not None and t.quant.scale_tensor is not None
    codes = t.values().astype(np.float64)
    scale = msg.tensors[t.quant.scale_tensor].array().astype(np.float64)
    zero = (msg.tensors[t.quant.zero_point_tensor].array().astype(np.float64)
            if t.quant.zero_point_tensor is not None else np.zeros_like(scale))
    dim = t.shape[t.quant.axis]
    pick = (np.arange(dim) // t.quant.group_size if t.quant.group_size
            else np.zeros(dim, dtype=np.int64))
    s, z = scale.take(pick, axis=t.quant.axis), zero.take(pick, axis=t.quant.axis)
    return ((codes - z) * s).astype(out)


def handle(header: dict[str, Any], payload: bytes, breaks: tuple[str, ...]
           ) -> tuple[dict[str, Any], bytes]:
    case_id = str(header.get("id", ""))
    for b in breaks:
        kind, _, pattern = b.partition(":")
        if kind == "crash-on" and fnmatch.fnmatchcase(case_id, pattern):
            os._exit(70)
        if kind == "hang-on" and fnmatch.fnmatchcase(case_id, pattern):
            time.sleep(3600)
    reply: dict[str, Any] = {"id": header.get("id")}
    context = header.get("context") or {}
    try:
        if header.get("op") == "decode":
            msg = decode_with_context(payload, context, breaks)
            doc = avp.to_canonical_json(msg)
            reply.update(status="ok", json=json.dumps(doc) if "json-text-as-string" in breaks
                         else doc)
            return reply, b""
        if header.get("op") == "encode":
            data = encode_from_json(header["json"], payload, context)
            reply.update(status="ok")
            return reply, data
        if header.get("op") == "dequantize":
            described, values = dequantize(payload, int(header["tensor"]), context, breaks)
            reply.update(status="ok", **described)
            return reply, values
        reply.update(status="unsupported", reason=f"unknown op {header.get('op')!r}")
    except avp.AvpError as exc:
        reply.update(_error(exc))
    return reply, b""


def serve(breaks: tuple[str, ...], stdin: IO[bytes], stdout: IO[bytes]) -> int:
    write_frame(stdout, start_object(breaks))
    while True:
        try:
            header, payload = read_frame(stdin)
        except EOFError:
            return 0
        if header.get("op") == "quit":
            return 0
        reply, data = handle(header, payload, breaks)
        write_frame(stdout, reply, data)


def _version(breaks: tuple[str, ...]) -> str:
    return str(avp.FORMAT_MAJOR) + "." + str(avp.FORMAT_MINOR) + (
        f" (broken: {', '.join(breaks)})" if breaks else "")


def simple(argv: list[str], breaks: tuple[str, ...]) -> int:
    """The simple tier: one request per process (TESTEE-PROTOCOL section 2)."""
    cmd, args = argv[0], argv[1:]
    out = sys.stdout.buffer
    if cmd == "capabilities":
        out.write(json.dumps(start_object(breaks)).encode())
        return 0
    data = sys.stdin.buffer.read()
    if cmd == "dequantize":
        if len(args) < 2 or args[0] != "--tensor":
            raise SystemExit("dequantize needs --tensor N first")
        header = {"op": "dequantize", "tensor": int(args[1]),
                  "context": _parse_context_args(args[2:])}
        payload = data
    elif cmd == "encode":
        (n,) = struct.unpack_from("<I", data)
        header = {"op": "encode", "json": json.loads(data[4:4 + n]),
                  "context": _parse_context_args(args)}
        payload = data[4 + n:]
    else:
        header = {"op": "decode", "context": _parse_context_args(args)}
        payload = data
    reply, encoded = handle(header, payload, breaks)
    if reply["status"] == "error":
        offset = "-" if reply["offset"] is None else str(reply["offset"])
        out.write(f"AVP-ERROR {reply['code']} {reply['name']} {offset} "
                  f"{reply['path'] or '-'}\n".encode())
        return 3
    if reply["status"] != "ok":
        return 4
    out.write(json.dumps(reply["json"]).encode() if cmd == "decode" else encoded)
    return 0


def _parse_context_args(args: list[str]) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    it = iter(args)
    for a in it:
        if a == "--no-verify":
            ctx["verify"] = False
        elif a == "--require-auth":
            ctx["require_auth"] = True
        elif a == "--limit":
            name, _, value = next(it).partition("=")
            ctx.setdefault("limits", {})[name] = int(value)
        elif a == "--key":
            key_id, _, key = next(it).partition("=")
            ctx.setdefault("keys", {})[key_id] = key
        elif a == "--expected-model-id":
            ctx["expected_model_id"] = next(it)
        elif a == "--expected-tokenizer-id":
            ctx["expected_tokenizer_id"] = next(it)
        elif a == "--local":
            ctx["local"] = json.loads(next(it))
        else:
            raise SystemExit(f"unknown option {a}")
    return ctx


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    breaks: list[str] = []
    while len(args) >= 2 and args[0] == "--break":
        breaks.append(args[1])
        del args[:2]
    if args and args[0] != "serve":
        return simple(args, tuple(breaks))
    return serve(tuple(breaks), sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
