"""The receiving process of benchmarks/handoff_bench.py: the avp_http server (hypercorn) with a
receiver that imports every delivered KV-cache into SmolLM2-135M-Instruct.

    python benchmarks/handoff_receiver.py      # prints "HANDOFF-RECEIVER LISTENING <port>"

The server decodes a delivery as its bytes arrive (CRC, zstd per tensor); deliver() then
dequantizes what is quantized and imports the cache (Connector.import_, bfloat16). The answer
gives the wall-clock times (time.time(), same machine as the sender) of the first tensor and of
the end of the import, the bytes received and the sha256 of the imported cache.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import avp_http
import torch
from avp_runtime import Connector

import avp_codec as avp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from handoff_codecs import kv_digest  # noqa: E402


class Importer(avp_http.Receiver):
    name = "handoff-receiver"
    modes = (int(avp.Mode.KV_CACHE),)

    def __init__(self, c: Connector) -> None:
        self.c = c
        self.model_id = c.model_id
        self.tokenizer_id = c.tokenizer_id
        self.first: dict[int, float] = {}
        self.lock = threading.Lock()

    def on_tensor(self, session: Any, index: int, tensor: avp.Tensor) -> None:
        if index == 0:
            with self.lock:
                self.first[id(session)] = time.time()

    def deliver(self, session: Any, msg: avp.Message,
                info: avp_http.Delivery) -> avp_http.Answer:
        ctx = self.c.import_(msg, dtype=torch.bfloat16)
        t_done = time.time()
        with self.lock:
            t_first = self.first.pop(id(session), t_done)
        kv = [t for t in msg.tensors if t.role in (avp.Role.KEY, avp.Role.VALUE)]
        codecs = sorted({avp.Codec(t.codec).name.lower() for t in kv})
        return avp_http.Answer.json({"t_first": t_first, "t_done": t_done,
                                     "bytes": info.length, "digest": kv_digest(ctx),
                                     "wire_codecs": codecs,
                                     "quantized": any(t.quant is not None for t in kv)})


def main() -> int:
    torch.set_num_threads(1)
    c = Connector.default()
    app = avp_http.AvpApp(Importer(c), avp_http.ServerConfig(answer_timeout=600.0))
    avp_http.serve(app, ready=lambda port: print(f"HANDOFF-RECEIVER LISTENING {port}",
                                                 flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
