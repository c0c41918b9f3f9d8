"""The receiving process of benchmarks/handoff_bench.py: the avp_http server (hypercorn) with a
receiver that imports every delivered KV-cache into SmolLM2-135M-Instruct.

    python benchmarks/handoff_receiver.py      # prints "HANDOFF-RECEIVER LISTENING <port>"

Pipelined tensor by tensor, for every codec. The server decodes a delivery as its bytes arrive
(CRC, zstd inflation per tensor) and hands each complete tensor to on_tensor; there the tensor
is checked against the model from its descriptor (admit.TensorChecks, as the runtime's agent
does) and queued to a worker thread that dequantizes it (a quantized tensor's scale and zero
point arrive before its codes), views it as a torch tensor and checks it for NaN / infinity,
while the next tensor is still arriving. At the end event deliver() only joins what is ready:
Connector.import_ of the prepared float tensors (admission of the whole message, zero-copy
views, token tiles joined, the cache built; finiteness was checked per tensor already).

The answer gives the wall-clock times (time.time(), same machine as the sender) of the first
tensor and of the end of the import, the bytes received and the sha256 of the imported cache.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import avp_http
import torch
from avp_runtime import Connector, admit, cache_io

import avp_codec as avp
from avp_codec import quant

sys.path.insert(0, str(Path(__file__).resolve().parent))
from handoff_codecs import kv_digest  # noqa: E402

_QUANT_ROLES = (avp.Role.QUANT_SCALE, avp.Role.QUANT_ZERO_POINT)


class Staged:
    """One message on its way in: the tensors seen so far (a quantized tensor's parameters are
    earlier tensors of the message) and the futures of the prepared KEY / VALUE tensors."""

    def __init__(self, check: Callable[[int, avp.Tensor], None] | None) -> None:
        self.check = check
        self.seen: list[avp.Tensor] = []
        self.ready: list[Future[tuple[int, avp.Tensor]]] = []
        self.t_first: float | None = None


def prepare(seen: list[avp.Tensor], index: int) -> tuple[int, avp.Tensor]:
    """Tensor `index` ready for the cache: dequantized (spec 12.2, the codec's reference
    arithmetic) when it is quantized, its values checked finite. `seen` holds the message's
    tensors up to `index` at least."""
    t = seen[index]
    if t.quant is not None:
        values = quant.dequantize_tensor(avp.Message(avp.Kind.KV_CACHE, [], [], seen), index)
        t = avp.Tensor.from_array(values, t.role, ordinal=t.layer, layout=t.layout,
                                  token_offset=t.token_offset)
    admit.check_finite(cache_io.tensor_to_torch(t), f"tensors[{index}]")
    return index, t


def float_message(msg: avp.Message, ready: dict[int, avp.Tensor]) -> avp.Message:
    """`msg` with its prepared tensors in place of the received ones, without the quantization
    parameters and the QUANT_POLICY entry (what quant.dequantize_message returns, tiles kept:
    the importer joins a layer's token tiles itself)."""
    tensors = [ready.get(i, t) for i, t in enumerate(msg.tensors) if t.role not in _QUANT_ROLES]
    entries = [e for e in msg.entries if e.key != int(avp.MetaKey.QUANT_POLICY)]
    return avp.Message(msg.kind, entries, msg.layers, tensors)


class Importer(avp_http.Receiver):
    name = "handoff-receiver"
    modes = (int(avp.Mode.KV_CACHE),)

    def __init__(self, c: Connector, *, pipelined: bool = True) -> None:
        self.c = c
        self.pipelined = pipelined  # False: everything at the end (handoff_ab.py's baseline)
        self.model_id = c.model_id
        self.tokenizer_id = c.tokenizer_id if c.tokenizer is not None else None
        self.staged: dict[int, Staged] = {}
        self.lock = threading.Lock()
        # One worker: on 2 cores the event loop (receiving, CRC, inflation) and this thread
        # (dequantize, view, check) are the receiver's two stages of the pipeline.
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="import")

    def tensor_check(self, session: Any, header: avp.HeaderEvent
                     ) -> Callable[[int, avp.Tensor], None] | None:
        check = None
        if header.kind == avp.Kind.KV_CACHE:
            length = admit.check_header(avp.Message(header.kind, header.entries, header.layers),
                                        self.c.model_id, self.c.spec)
            check = admit.TensorChecks(header.layers, self.c.spec, length, max_batch=1).tensor
        with self.lock:  # a new message of this session starts here
            self.staged[id(session)] = Staged(check)
        return check

    def on_tensor(self, session: Any, index: int, tensor: avp.Tensor) -> None:
        st = self.staged.get(id(session))
        if st is None:  # not a payload (tensor_check was not asked): nothing to import
            return
        if st.t_first is None:
            st.t_first = time.time()
        assert index == len(st.seen)
        st.seen.append(tensor)
        if self.pipelined and tensor.role in (avp.Role.KEY, avp.Role.VALUE):
            st.ready.append(self.worker.submit(prepare, st.seen, index))

    def deliver(self, session: Any, msg: avp.Message,
                info: avp_http.Delivery) -> avp_http.Answer:
        with self.lock:
            st = self.staged.pop(id(session))
        if self.pipelined:
            ready = dict(f.result() for f in st.ready)
            ctx = self.c.import_(float_message(msg, ready), dtype=torch.bfloat16,
                                 allow_non_finite=True)  # checked per tensor in prepare()
        else:  # dequantize, view and check the whole message now
            ctx = self.c.import_(msg, dtype=torch.bfloat16)
        t_done = time.time()
        kv = [t for t in msg.tensors if t.role in (avp.Role.KEY, avp.Role.VALUE)]
        codecs = sorted({avp.Codec(t.codec).name.lower() for t in kv})
        return avp_http.Answer.json({"t_first": st.t_first or t_done, "t_done": t_done,
                                     "bytes": info.length, "digest": kv_digest(ctx),
                                     "wire_codecs": codecs,
                                     "quantized": any(t.quant is not None for t in kv)})


def main() -> int:
    torch.set_num_threads(1)
    c = Connector.default()
    whole = os.environ.get("HANDOFF_RECEIVER_WHOLE") == "1"
    app = avp_http.AvpApp(Importer(c, pipelined=not whole),
                          avp_http.ServerConfig(answer_timeout=600.0))
    avp_http.serve(app, ready=lambda port: print(f"HANDOFF-RECEIVER LISTENING {port}",
                                                 flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
