"""The agent of the hostile corpus's A2A and MCP entries.

    python hostile_agent_server.py a2a|mcp STORE_DIR     # one server, until SIGTERM
    python hostile_agent_server.py zygote                 # forks one per line of stdin

avp_agents' A2A server (the a2a-sdk's card and JSON-RPC routes) or MCP server (the mcp SDK's
Streamable HTTP at ``/mcp``), each with the HTTP binding at ``/avp/v1``, hosting the runtime's
agent (``RuntimeResponder``) on the runner's tiny receiver model, configured as
``python -m avp_agents.a2a_server`` / ``mcp_server`` configure them except for the inline limit:
``MAX_INLINE`` (32 MiB, their ``--max-inline``) lets every corpus case reach the decoder by value,
not only the small ones (the default 1 MiB would refuse the larger ones with 413 before reading
them). References may be fetched from any host (the commands' default policy). A server prints
one line ``AVP-HOSTILE-AGENT {"port": P, "pid": N, "model_id": HEX, "seq": S}`` when it listens.

The runner wants a fresh server per case (hostile_agents.py). Starting Python, torch,
Transformers and the SDKs takes tens of seconds on a loaded machine, so the ``zygote`` loads all
of that once and then, for every line ``PROTO STORE_DIR SEQ`` on its stdin, forks a server (its
children are reaped by ignoring SIGCHLD; the runner ends each with SIGTERM).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import avp_http  # noqa: E402
import hostile_entries as he  # noqa: E402
from avp_agents.payload import FetchPolicy  # noqa: E402
from avp_agents.runtime import RuntimeResponder  # noqa: E402
from avp_http.store import MessageStore  # noqa: E402
from avp_runtime import agent as ag  # noqa: E402

MAX_INLINE = 32 << 20
FETCH_TIMEOUT = 20.0


def serve(proto: str, store_dir: str, c: Any, seq: int = 0) -> int:
    from avp_agents.a2a_server import A2AConfig, A2AServer, _quiet_sdk_refusals
    from avp_agents.mcp_server import MCPConfig, MCPServer

    responder = RuntimeResponder(ag.Agent(c, "hostile-agent", max_new_tokens=2, steps=0))
    store = MessageStore(Path(store_dir))
    policy = FetchPolicy(timeout=FETCH_TIMEOUT)
    server: A2AServer | MCPServer
    if proto == "a2a":
        _quiet_sdk_refusals()
        server = A2AServer(responder, A2AConfig(
            name="hostile-a2a", max_inline_bytes=MAX_INLINE, policy=policy, store=store))
    elif proto == "mcp":
        server = MCPServer(responder, MCPConfig(
            name="hostile-mcp", max_inline_bytes=MAX_INLINE, policy=policy, store=store))
    else:
        sys.exit(f"usage: {sys.argv[0]} a2a|mcp STORE_DIR | zygote")

    def ready(port: int) -> None:
        server.bind(f"http://127.0.0.1:{port}")
        info = {"port": port, "pid": os.getpid(), "model_id": c.model_id.hex(), "seq": seq}
        print(f"AVP-HOSTILE-AGENT {json.dumps(info)}", flush=True)

    avp_http.serve(server.app, "127.0.0.1", 0, ready=ready)
    return 0


def zygote() -> int:
    import avp_agents.a2a_server  # noqa: F401 - imported once, before any fork
    import avp_agents.mcp_server  # noqa: F401

    c = he.tiny_connector()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the servers
    print("AVP-HOSTILE-ZYGOTE READY", flush=True)
    for line in sys.stdin:
        proto, store_dir, seq = line.split()
        if os.fork() == 0:
            code = 1
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                from hostile_agents import die_with_parent

                die_with_parent()  # a server outlives no zygote
                code = serve(proto, store_dir, c, int(seq))
            finally:
                sys.stdout.flush()
                os._exit(code)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["zygote"]:
        sys.exit(zygote())
    sys.exit(serve(sys.argv[1], sys.argv[2], he.tiny_connector()))
