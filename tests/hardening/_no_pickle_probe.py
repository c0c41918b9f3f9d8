"""Run by test_no_pickle.py in a fresh interpreter: import every shipped package and push real
messages through every decoding path while anything that unpickles is a tripwire.

Two layers of tripwire: an audit hook, installed before any import, records the interpreter's
``pickle.find_class`` events (raised by every unpickler, C or Python, whenever a pickle names a
class or function: what makes unpickling dangerous); and after the imports, ``pickle.load(s)``,
``pickle.Unpickler``, ``torch.load`` (unless ``weights_only=True``) and ``numpy.load`` with
``allow_pickle`` are replaced by functions that record and raise. Prints one JSON object.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

EVENTS: list[str] = []
# numba (the optional ``fast`` extra) keeps the kernels it compiled on this machine in an on-disk
# cache (avp_codec/__pycache__ or NUMBA_CACHE_DIR) and loads them with pickle: local code it
# wrote itself, with the trust of the package's own .pyc files, never any part of a received
# message. Those loads are counted apart; anything else that unpickles still trips.
KERNEL_CACHE_LOADS: list[str] = []
_NUMBA_CACHE = "numba.core.caching"


def _from_numba_cache() -> bool:
    f = sys._getframe(2)
    while f is not None:
        if f.f_globals.get("__name__") == _NUMBA_CACHE:
            return True
        f = f.f_back  # type: ignore[assignment]
    return False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "pickle.find_class":
        (KERNEL_CACHE_LOADS if _from_numba_cache() else EVENTS).append(f"{event} {args!r}"[:200])


sys.addaudithook(_hook)

import pickle  # noqa: E402

import avp_conform.runner  # noqa: E402, F401
import avp_runtime.cache_io as cache_io  # noqa: E402
import avp_runtime.handshake as hs  # noqa: E402
import avp_tools.dump_cli as dump_cli  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from avp_runtime.connector import Connector  # noqa: E402

import avp_codec as avp  # noqa: E402

IMPORT_EVENTS = list(EVENTS)


class Tripped(Exception):
    pass


def _tripwire(name: str) -> Any:
    def trip(*args: Any, **kwargs: Any) -> Any:
        EVENTS.append(name)
        raise Tripped(name)
    return trip


_torch_load, _np_load, _pickle_loads = torch.load, np.load, pickle.loads


def _guarded_torch_load(*args: Any, **kwargs: Any) -> Any:
    if kwargs.get("weights_only") is not True:
        return _tripwire("torch.load without weights_only=True")()
    return _torch_load(*args, **kwargs)


def _guarded_np_load(*args: Any, **kwargs: Any) -> Any:
    if kwargs.get("allow_pickle"):
        return _tripwire("numpy.load(allow_pickle=True)")()
    return _np_load(*args, **kwargs)


def _guarded(name: str, real: Any) -> Any:
    trip = _tripwire(name)

    def load(*args: Any, **kwargs: Any) -> Any:
        if _from_numba_cache():
            KERNEL_CACHE_LOADS.append(name)
            return real(*args, **kwargs)
        return trip()
    return load


pickle.load = _guarded("pickle.load", pickle.load)  # type: ignore[assignment]
pickle.loads = _guarded("pickle.loads", pickle.loads)  # type: ignore[assignment]


class _TrippedUnpickler(pickle.Unpickler):
    # A class, not a function: lazily imported modules (torch._dynamo) subclass Unpickler.
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _tripwire("pickle.Unpickler")()


pickle.Unpickler = _TrippedUnpickler  # type: ignore[misc]
torch.load = _guarded_torch_load  # type: ignore[assignment]
np.load = _guarded_np_load  # type: ignore[assignment]


def _code(fn: Any) -> str:
    try:
        fn()
    except avp.AvpError as e:
        return e.code.name
    return "accepted"


def selftest() -> list[str]:
    """Prove the tripwires fire: pickle a harmless object and try each loading path; returns
    the events that caused (run last, after the real work has been recorded)."""
    before = len(EVENTS)
    blob = pickle.dumps(Path("x"))  # names a class, so unpickling it calls find_class
    buf = io.BytesIO()
    torch.save({"a": 1}, buf)
    for fn in (lambda: pickle.loads(blob), lambda: pickle.Unpickler(io.BytesIO(blob)),
               lambda: torch.load(io.BytesIO(buf.getvalue())),
               lambda: np.load(io.BytesIO(b""), allow_pickle=True),
               lambda: _pickle_loads(blob)):
        with contextlib.suppress(Tripped):
            fn()
    return EVENTS[before:]


def main() -> None:
    vectors = sorted(Path(sys.argv[1]).glob("*/*.avp"))
    decoded = 0
    for p in vectors:
        data = p.read_bytes()
        for source in (data, p):
            try:
                msg = avp.decode(source) if isinstance(source, bytes) else avp.decode_file(source)
            except avp.AvpError:
                continue
            decoded += 1
            avp.dumps_canonical_json(msg)
            for t in msg.tensors:
                t.array()
                if t.quant is None and t.role in (avp.Role.KEY, avp.Role.VALUE,
                                                  avp.Role.HIDDEN_STATE):
                    cache_io.tensor_to_torch(t)
        dec = avp.Decoder()
        try:
            dec.feed(data)
            dec.end_of_input()
            while not isinstance(dec.next_event(), avp.EndEvent):
                pass
        except avp.AvpError:
            pass
        with redirect_stdout(io.StringIO()), contextlib.suppress(Exception, SystemExit):
            # The dump tool reports broken vectors; only an unpickling attempt matters here.
            dump_cli.main(["show", "--json", str(p)], standalone_mode=False)

    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    tiny = Connector(AutoModelForCausalLM.from_config(cfg).eval(), None, name="tiny")
    torch.manual_seed(1)
    other = Connector(AutoModelForCausalLM.from_config(cfg).eval(), None, name="other")
    ctx = tiny.prefill([1, 2, 3, 4])
    blob = tiny.export_bytes(ctx)
    back = tiny.import_(blob)
    msg = avp.decode(blob)
    no_id = avp.Message(msg.kind, [e for e in msg.entries if e.key != avp.MetaKey.MODEL_ID],
                        msg.layers, msg.tensors)
    local = hs.LocalSide("probe", model_id=tiny.model_id)
    hello = hs.Initiator(hs.LocalSide("peer")).hello()
    reply, _ = hs.Responder(local).handle_hello(avp.decode(avp.encode(hello)))
    events = list(EVENTS)
    print(json.dumps({
        "vectors": len(vectors), "decoded": decoded, "import_events": IMPORT_EVENTS,
        "events": events, "selftest_events": selftest(),
        "kernel_cache_loads": len(KERNEL_CACHE_LOADS),
        "roundtrip_tokens": int(back.context_length),
        "reply": avp.Kind(reply.kind).name,
        "runtime_without_model_id": _code(lambda: tiny.import_(no_id)),
        "runtime_other_model": _code(lambda: other.import_(blob)),
        "runtime_own_model": _code(lambda: tiny.import_(blob)),
    }))


if __name__ == "__main__":
    main()
