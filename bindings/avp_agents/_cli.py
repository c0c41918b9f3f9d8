"""What the A2A and MCP server commands share: their common arguments, the responder and fetch
policy built from them, and serving until stopped (the readiness line names the bound port)."""

from __future__ import annotations

import argparse
from typing import Protocol

import avp_http

from ._host import Hosted
from .payload import FetchPolicy
from .responder import Responder, load_responder


class _Server(Protocol):
    app: Hosted

    def bind(self, base_url: str) -> None: ...


def parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every agent server takes; callers add their own."""
    ap = argparse.ArgumentParser(prog=prog, description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="echo", help="a runtime model name, or 'echo' (no model)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--max-inline", type=int, default=1 << 20)
    ap.add_argument("--fetch-hosts", default=None,
                    help="comma-separated hosts by-reference payloads may come from (default any)")
    ap.add_argument("--no-fetch", action="store_true",
                    help="accept references to this server's own binding only")
    ap.add_argument("--fetch-timeout", type=float, default=60.0)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    return ap


def responder(args: argparse.Namespace) -> Responder:
    return load_responder(args.model, name=args.name, threads=args.threads,
                          max_new_tokens=args.max_new_tokens)


def fetch_policy(args: argparse.Namespace) -> FetchPolicy:
    hosts = None if args.fetch_hosts is None else frozenset(
        h.strip() for h in args.fetch_hosts.split(",") if h.strip())
    return FetchPolicy(hosts=hosts, fetch_others=not args.no_fetch, timeout=args.fetch_timeout)


def serve(server: _Server, args: argparse.Namespace, banner: str) -> int:
    """Serve until stopped; once bound, tell the server its URL and print ``BANNER PORT``."""

    def ready(port: int) -> None:
        server.bind(f"http://{args.host}:{port}")
        print(f"{banner} {port}", flush=True)

    avp_http.serve(server.app, args.host, args.port, ready=ready)
    return 0
