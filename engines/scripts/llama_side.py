"""The llama.cpp side of the pairwise runs (.venv-llama; no torch): baseline and its own state
as llama.avp (through avp_engines.llama), then continuations from the other engines' messages
converted into llama.cpp state. Also records small real state blobs as CI fixtures."""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from avp_engines import _llama_blob, llama  # noqa: E402

import avp_codec as avp  # noqa: E402

KV_HEADS = 3
ARCH = "llama"
FIXTURE_TOKENS = 16


def open_llama(**kw: Any) -> Any:
    from llama_cpp import Llama

    return Llama(model_path=str(C.gguf_path()), n_ctx=512, n_batch=512, n_threads=2,
                 verbose=False, **kw)


def logits(llm: Any) -> np.ndarray:
    import llama_cpp

    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))


def greedy(llm: Any, n: int, first: int | None = None) -> list[int]:
    out: list[int] = []
    if first is not None:
        llm.eval([first])
        out.append(first)
    while len(out) < n:
        tok = int(np.argmax(logits(llm)))
        out.append(tok)
        if len(out) < n:
            llm.eval([tok])
    return out


def get_state(llm: Any) -> bytes:
    import llama_cpp

    ctx = llm._ctx.ctx
    size = llama_cpp.llama_state_seq_get_size(ctx, 0)
    buf = (ctypes.c_uint8 * size)()
    n = llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
    return bytes(buf)[:n]


def set_state(llm: Any, blob: bytes, ids: list[int]) -> None:
    import llama_cpp

    llm.reset()
    mem = llama_cpp.llama_get_memory(llm._ctx.ctx)
    llama_cpp.llama_memory_clear(mem, True)
    buf = (ctypes.c_uint8 * len(blob)).from_buffer_copy(blob)
    got = llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, buf, len(blob), 0)
    if got == 0:
        raise RuntimeError("llama_state_seq_set_data refused the state")
    llm.n_tokens = len(ids)
    llm.input_ids[: len(ids)] = ids


def target_of(blob: bytes) -> llama.LlamaTarget:
    st = _llama_blob.parse(blob)
    ly = st.layers[0]
    return llama.LlamaTarget(ly.k_type.name, ly.v_type.name, st.v_trans, ARCH)


def run(work: Path, quant: str | None) -> None:
    prep = C.load_json(work / "hf_prepare.json")
    vl = C.load_json(work / "vllm.json") if (work / "vllm.json").exists() else None
    ids = prep["prompt_ids"]
    mid = bytes.fromhex(prep["model_id"])
    kw: dict[str, Any] = {}
    suffix = ""
    if quant:
        import llama_cpp

        t = {"q8_0": llama_cpp.GGML_TYPE_Q8_0, "q4_0": llama_cpp.GGML_TYPE_Q4_0}[quant]
        kw = {"type_k": t, "type_v": t, "flash_attn": True}
        suffix = f"_{quant}"
    tm = C.Timer()
    llm = open_llama(**kw)
    out: dict[str, Any] = {"load_s": tm()}
    llm.reset()
    llm.eval(ids)
    out["prefill_s"] = tm()
    blob = get_state(llm)
    out["state_s"] = tm()
    out["baseline"] = greedy(llm, C.N_NEW)
    out["baseline_s"] = tm()
    (work / f"llama_state{suffix}.bin").write_bytes(blob)
    msg = llama.state_to_message(blob, mid, llama.LlamaModel(KV_HEADS, ARCH), token_ids=ids,
                                 model_name="SmolLM2-135M-Instruct (llama.cpp)")
    wire = avp.encode(msg)
    out["to_avp_s"] = tm()
    (work / f"llama{suffix}.avp").write_bytes(wire)
    out["state_bytes"], out["bytes"] = len(blob), len(wire)
    target = target_of(blob)
    out["target"] = {"k": target.k_type, "v": target.v_type, "v_trans": target.v_trans}
    # round trip of its own state through AVP: byte-identical blob
    back = llama.message_to_state(avp.decode(wire), target, model_id=mid)
    out["own_round_trip_identical"] = back == blob
    sources = [("self", f"llama{suffix}.avp", out["baseline"][0]),
               ("hf", "hf.avp", prep["baseline"][0]),
               ("hf_zero", "hf_zero.avp", prep["baseline"][0]),
               ("othermodel", "hf_othermodel.avp", prep["baseline"][0])]
    if vl is not None and (work / "vllm.avp").exists():
        (work / "vllm_zero.avp").write_bytes(
            avp.encode(C.zeroed(avp.decode_file(work / "vllm.avp"))))
        sources += [("vllm", "vllm.avp", vl["baseline"]["tokens"][0]),
                    ("vllm_zero", "vllm_zero.avp", vl["baseline"]["tokens"][0])]
    for tag, name, first in sources:
        step: dict[str, Any] = {"message": name, "first": first}
        tm()
        try:
            state = llama.message_to_state(avp.decode_file(work / name), target, model_id=mid)
        except avp.AvpError as e:
            step["refused"] = e.code.name
            out[tag] = step
            continue
        step["to_state_s"] = tm()
        set_state(llm, state, ids)
        step["set_s"] = tm()
        step["tokens"] = greedy(llm, C.N_NEW, first)
        step["gen_s"] = tm()
        out[tag] = step
    C.save_json(work / f"llama{suffix}.json", out)


def fixtures(work: Path, dest: Path) -> None:
    """Small real states for CI: f16 (V transposed, no flash attention), q8_0 and q4_0 (flash
    attention), for the short fixture prompt prepared by hf_side."""
    import llama_cpp

    ids = C.load_json(work / "hf_prepare.json")["prompt_ids"][:FIXTURE_TOKENS]
    for name, kw in (("f16", {}),
                     ("q8_0", {"type_k": llama_cpp.GGML_TYPE_Q8_0,
                               "type_v": llama_cpp.GGML_TYPE_Q8_0, "flash_attn": True}),
                     ("q4_0", {"type_k": llama_cpp.GGML_TYPE_Q4_0,
                               "type_v": llama_cpp.GGML_TYPE_Q4_0, "flash_attn": True})):
        llm = open_llama(**kw)
        llm.reset()
        llm.eval(ids)
        blob = get_state(llm)
        nxt = greedy(llm, 4)
        (dest / f"llama_{name}.state").write_bytes(blob)
        C.save_json(dest / f"llama_{name}.json", {"prompt_ids": ids, "next": nxt})
        del llm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--quant", choices=["q8_0", "q4_0"])
    ap.add_argument("--fixtures", type=Path)
    a = ap.parse_args()
    if a.fixtures:
        fixtures(a.work, a.fixtures)
    else:
        run(a.work, a.quant)


if __name__ == "__main__":
    main()
