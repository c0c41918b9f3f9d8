"""``avp-serve``: run an AVP-over-HTTP receiver (spec/avp-http.md) on hypercorn.

    avp-serve --port 8080                          # a model-less Mailbox (TEXT; stores messages)
    avp-serve --model smollm2 --port 8080          # a runtime agent on a real model
    avp-serve --app mypkg.mod:make_receiver        # any Receiver factory
    avp-serve --certfile c.pem --keyfile k.pem --token-file tokens.txt --hmac-key k1=key.bin

Prints ``AVP-SERVE LISTENING <port>`` once the socket listens, then serves HTTP/1.1, HTTP/2 with
prior knowledge and (with a certificate) HTTP/2 over TLS until SIGINT or SIGTERM. Bad options
exit with status 2 and one line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import avp_codec as avp

from ._intake import Timing
from ._run import serve
from .receiver import Mailbox, Receiver
from .server import SERVER_LIMITS, AvpApp, ServerConfig
from .store import MessageStore


def _receiver(args: argparse.Namespace) -> Receiver:
    if args.model and args.app:
        raise SystemExit("avp-serve: --model and --app exclude each other")
    if args.model:
        # The runtime (torch, Transformers) is loaded only when asked for: avp_http itself
        # needs neither.
        from avp_runtime.agent import receiver_for_model

        model_receiver: Receiver = receiver_for_model(args.model, name=args.name,
                                                      threads=args.threads)
        return model_receiver
    if args.app:
        mod, _, attr = args.app.partition(":")
        factory: Callable[[], Any] = getattr(importlib.import_module(mod), attr or "receiver")
        rec = factory()
        if not isinstance(rec, Receiver):
            raise SystemExit(f"avp-serve: {args.app} did not return a Receiver")
        return rec
    return Mailbox(name=args.name)


def _keys(specs: list[str]) -> dict[bytes, bytes]:
    keys = {}
    for spec in specs:
        key_id, sep, path = spec.partition("=")
        if not sep or not key_id:
            raise SystemExit(f"avp-serve: --hmac-key wants KEY_ID=FILE, got {spec!r}")
        with open(path, "rb") as f:
            keys[key_id.encode()] = f.read()
    return keys


def _limits(args: argparse.Namespace) -> avp.Limits:
    values = {"max_message_bytes": args.max_message_bytes,
              "max_tensor_bytes": args.max_tensor_bytes,
              # The incremental decoder holds one tensor's stored bytes at a time.
              "max_buffer_bytes": max(args.max_tensor_bytes, SERVER_LIMITS.max_buffer_bytes)}
    for spec in args.limit:
        name, sep, value = spec.partition("=")
        if not sep or name not in avp.Limits.__dataclass_fields__ or not value.isdigit():
            raise SystemExit(f"avp-serve: --limit wants NAME=INTEGER with a limit of spec 16, "
                             f"got {spec!r}")
        values[name] = int(value)
    return avp.Limits(**values)


def _tokens(path: str | None) -> list[str]:
    tokens = []
    if path:
        with open(path, encoding="utf-8") as f:
            tokens = [line.strip() for line in f if line.strip()]
    env = os.environ.get("AVP_BEARER_TOKEN")
    return tokens + ([env] if env else [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="avp-serve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080, help="0: the OS picks one (printed)")
    ap.add_argument("--model", help="serve a runtime agent on this model (needs the runtime)")
    ap.add_argument("--app", help="module:factory returning a avp_http.Receiver")
    ap.add_argument("--name", default=None, help="AGENT_NAME in ACCEPT")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for --model")
    ap.add_argument("--certfile")
    ap.add_argument("--keyfile")
    ap.add_argument("--token-file", help="accepted bearer tokens, one a line "
                    "(also $AVP_BEARER_TOKEN)")
    ap.add_argument("--hmac-key", action="append", default=[], metavar="KEY_ID=FILE")
    ap.add_argument("--require-auth", action="store_true",
                    help="refuse messages without a verified HMAC tag")
    ap.add_argument("--store", help="directory of stored messages (default: a temporary one)")
    ap.add_argument("--store-max-bytes", type=int, default=8 << 30)
    ap.add_argument("--max-message-bytes", type=int, default=SERVER_LIMITS.max_message_bytes)
    ap.add_argument("--max-tensor-bytes", type=int, default=SERVER_LIMITS.max_tensor_bytes)
    ap.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                    help="any limit of spec 16 (max_header_bytes=65536, ...); repeatable")
    ap.add_argument("--max-decoded-bytes", type=int, default=1 << 32,
                    help="decoded tensor bytes one delivery may keep")
    ap.add_argument("--max-concurrent", type=int, default=16,
                    help="bodies decoded at once; more wait --queue-timeout, then 503")
    ap.add_argument("--queue-timeout", type=float, default=10.0)
    ap.add_argument("--answer-timeout", type=float, default=300.0,
                    help="longest a delivery's answer may take (then 503)")
    ap.add_argument("--chunk-timeout", type=float, default=30.0)
    ap.add_argument("--body-grace", type=float, default=30.0)
    ap.add_argument("--min-rate", type=float, default=32 * 1024)
    ap.add_argument("--keep-alive", type=float, default=5.0)
    ap.add_argument("--access-log", action="store_true")
    args = ap.parse_args(argv)
    try:
        if bool(args.certfile) != bool(args.keyfile):
            raise SystemExit("avp-serve: --certfile and --keyfile go together")
        if args.require_auth and not args.hmac_key:
            raise SystemExit("avp-serve: --require-auth needs at least one --hmac-key")
        limits = _limits(args)
        cfg = ServerConfig(
            limits=limits, tokens=_tokens(args.token_file), keys=_keys(args.hmac_key),
            require_auth=args.require_auth, max_concurrent=args.max_concurrent,
            max_decoded_bytes=args.max_decoded_bytes, queue_timeout=args.queue_timeout,
            answer_timeout=args.answer_timeout,
            timing=Timing(args.chunk_timeout, args.body_grace, args.min_rate),
            store=MessageStore(args.store, max_bytes=args.store_max_bytes))
        app = AvpApp(_receiver(args), cfg)
    except OSError as e:
        print(f"avp-serve: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2

    def ready(port: int) -> None:
        print(f"AVP-SERVE LISTENING {port}", flush=True)

    serve(app, args.host, args.port, certfile=args.certfile, keyfile=args.keyfile,
          keep_alive=args.keep_alive, access_log=args.access_log, ready=ready)
    return 0


if __name__ == "__main__":
    sys.exit(main())
