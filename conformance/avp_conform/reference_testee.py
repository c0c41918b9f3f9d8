"""The reference testee: avp_codec behind TESTEE-PROTOCOL.md (both tiers).

    python -m avp_conform.reference_testee            persistent tier
    python -m avp_conform.reference_testee decode ... simple tier (see the protocol, section 2)

``--break NAME`` turns it into a deliberately broken implementation, so that the suite can prove it
catches real bugs: ``ignore-data-crc`` never verifies tensor CRCs, ``accept-trailing`` ignores
bytes after the Trailer, ``crash-on:GLOB`` / ``hang-on:GLOB`` exit / stall on matching case ids
(harness tests).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import struct
import sys
import time
from typing import IO, Any

import avp_codec as avp

from .testee import read_frame, write_frame

NAME = "avp_codec reference"


def capabilities() -> dict[str, Any]:
    return {
        "operations": ["decode", "encode"],
        "kinds": [k.name for k in avp.Kind],
        "dtypes": [d.name.lower() for d in avp.Dtype],
        "codecs": [c.name.lower() for c in avp.Codec],
        "features": ["unverified", "limits", "auth", "model_check", "handshake"],
    }


def _keys(context: dict[str, Any]) -> dict[bytes, bytes]:
    return {bytes.fromhex(k): bytes.fromhex(v) for k, v in context.get("keys", {}).items()}


def _local_hello(local: dict[str, Any]) -> avp.Message:
    def opt(name: str) -> bytes | None:
        value = local.get(name)
        return bytes.fromhex(value) if value else None
    return avp.hello_message("conformance-receiver", versions=local.get("versions", [0x10000]),
                             max_message_bytes=local.get("max_message_bytes", 1 << 40),
                             dtypes=local.get("dtypes", [int(d) for d in avp.Dtype]),
                             codecs=local.get("codecs", [int(c) for c in avp.Codec]),
                             modes=local.get("modes", [int(m) for m in avp.Mode]),
                             model_id=opt("model_id"), tokenizer_id=opt("tokenizer_id"),
                             nonce=opt("nonce"))


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
    if context.get("expected_model_id"):
        avp.check_model_id(msg, bytes.fromhex(context["expected_model_id"]))
    if context.get("expected_model_id") and msg.kind == avp.Kind.HIDDEN_STATE \
            and msg.get(avp.MetaKey.MODEL_ID) != bytes.fromhex(context["expected_model_id"]):
        raise avp.AvpError(avp.ErrorCode.MODEL_MISMATCH, "HIDDEN_STATE of another model")
    if context.get("local") is not None:
        check_session(msg, context["local"], len(data))
    return msg


def _fail(code: avp.ErrorCode, text: str) -> avp.AvpError:
    return avp.AvpError(code, text)


def check_session(msg: avp.Message, local: dict[str, Any], size: int) -> None:
    """The receiver's checks of spec 14.2-14.3 (handshake) and R-14.6/R-14.7 (session)."""
    hello = _local_hello(local)
    K, E = avp.MetaKey, avp.ErrorCode
    if msg.kind in (avp.Kind.HELLO, avp.Kind.ACCEPT):
        expected = avp.Kind.HELLO if local.get("role", "responder") == "responder" \
            else avp.Kind.ACCEPT
        if msg.kind != expected:
            raise _fail(E.KIND_CONSTRAINT, f"{msg.kind.name} where {expected.name} belongs")
        if local.get("nonce") and msg.get(K.NONCE) == bytes.fromhex(local["nonce"]):
            raise _fail(E.NEGOTIATION_MISMATCH, "the peer reflected our own NONCE")
        vocab, digest = msg.get(K.VOCABULARY), msg.get(K.VOCAB_DIGEST)
        if isinstance(vocab, bytes) and isinstance(digest, bytes) \
                and hashlib.sha256(vocab).digest() != digest:
            raise _fail(E.INVALID_VALUE, "VOCAB_DIGEST is not the SHA-256 of VOCABULARY")
        modes = msg.get(K.CAP_MODES)
        if msg.kind == avp.Kind.HELLO and isinstance(modes, tuple) and avp.Mode.TEXT not in modes:
            raise _fail(E.UNSUPPORTED_CAPABILITY, "HELLO without TEXT in CAP_MODES")
        mine = avp.resolve_mode(hello, msg)  # NO_COMMON_VERSION comes from here
        if msg.kind == avp.Kind.ACCEPT:
            theirs = msg.get(K.MODE)
            own = hello.get(K.CAP_MODES)
            # a mode we did not offer, or one ranked above our own result (a lower
            # code is a higher mode), is a mismatch; a downgrade is accepted.
            if not isinstance(theirs, int) or (isinstance(own, tuple) and theirs not in own
                                               and theirs != avp.Mode.TEXT) or theirs < mine:
                raise _fail(E.NEGOTIATION_MISMATCH, f"peer resolved {theirs!r}, we resolve {mine}")
        return
    mode = local.get("session_mode")
    payload_kind = {1: avp.Kind.KV_CACHE, 2: avp.Kind.HIDDEN_STATE, 3: avp.Kind.TEXT}
    if mode is not None and msg.kind not in (payload_kind[mode], avp.Kind.ERROR):
        raise _fail(E.UNSUPPORTED_CAPABILITY, f"{msg.kind.name} in a session of mode {mode}")
    limit = local.get("max_message_bytes")
    if limit is not None and size > limit:
        raise _fail(E.UNSUPPORTED_CAPABILITY, f"{size} bytes > MAX_MESSAGE_BYTES {limit}")
    avp.check_capabilities(msg, hello)


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
            reply.update(status="ok", json=avp.to_canonical_json(msg))
            return reply, b""
        if header.get("op") == "encode":
            data = encode_from_json(header["json"], payload, context)
            reply.update(status="ok")
            return reply, data
        reply.update(status="unsupported", reason=f"unknown op {header.get('op')!r}")
    except avp.AvpError as exc:
        reply.update(_error(exc))
    return reply, b""


def serve(breaks: tuple[str, ...], stdin: IO[bytes], stdout: IO[bytes]) -> int:
    write_frame(stdout, {"avp_testee": 1, "name": NAME, "version": _version(breaks),
                         "capabilities": capabilities()})
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
        out.write(json.dumps({"avp_testee": 1, "name": NAME, "version": _version(breaks),
                              "capabilities": capabilities()}).encode())
        return 0
    data = sys.stdin.buffer.read()
    if cmd == "encode":
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
    out.write(encoded if cmd == "encode" else json.dumps(reply["json"]).encode())
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
