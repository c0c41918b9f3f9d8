"""The agent server of the hostile corpus's HTTP entries: ``python hostile_server.py STORE_DIR``.

The runtime's AgentReceiver (avp_runtime.agent) hosting the runner's tiny receiver model on
avp_http over hypercorn, configured as ``python -m avp_runtime.agent serve`` configures it
(its limits and answer timeout), with its message store in STORE_DIR. Prints one line
``AVP-HOSTILE-SERVER {"port": P, "pid": N, "model_id": HEX}`` when it listens; runs until
SIGTERM.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import avp_http  # noqa: E402
import hostile_entries as he  # noqa: E402
from avp_http.store import MessageStore  # noqa: E402
from avp_runtime import agent as ag  # noqa: E402

import avp_codec as avp  # noqa: E402


def main(store_dir: str) -> int:
    c = he.tiny_connector()
    agent = ag.Agent(c, "hostile-agent", max_new_tokens=2, steps=0)
    cfg = avp_http.ServerConfig(
        limits=avp.Limits(max_message_bytes=ag.MAX_MESSAGE, max_tensor_bytes=1 << 30,
                          max_buffer_bytes=1 << 30),
        answer_timeout=ag.DEFAULT_TIMEOUT, store=MessageStore(Path(store_dir)))
    app = avp_http.AvpApp(ag.AgentReceiver(agent), cfg)

    def ready(port: int) -> None:
        info = {"port": port, "pid": os.getpid(), "model_id": c.model_id.hex()}
        print(f"AVP-HOSTILE-SERVER {json.dumps(info)}", flush=True)

    avp_http.serve(app, "127.0.0.1", 0, ready=ready)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
