"""`make engines-demo`: vLLM prefills a prompt, llama.cpp continues it from the AVP message.

Three processes: this one (the project venv) starts a vLLM engine with the AVP connector as a
producer (.venv-vllm), which prefills the prompt, samples one token and writes the prompt's KV as
an AVP file; then a llama.cpp process (.venv-llama) converts the message into its own sequence
state, installs it, and continues greedily from vLLM's token, never computing the prompt
itself. It prints times and sizes, and how many leading tokens of the continuation agree with
vLLM's own greedy continuation and with llama.cpp computing the prompt itself. The engines run
different weights (vLLM the float32 safetensors conversion, llama.cpp the Q4_1 GGUF), so a long
greedy continuation may part from either after a while; the demo fails only if the first 16
tokens (what `make engines` checks) disagree with vLLM's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

N = 24


def vllm_prefill(work: Path, prompt: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.config import KVTransferConfig

    t = C.Timer()
    ktc = KVTransferConfig(kv_connector="AvpConnector",
                           kv_connector_module_path="avp_engines.vllm_connector",
                           kv_role="kv_producer",
                           kv_connector_extra_config={"save_dir": str(work)})
    llm = LLM(model=str(C.MODEL_DIR), dtype="float32", enforce_eager=True, max_model_len=512,
              block_size=32, kv_transfer_config=ktc, disable_log_stats=True)
    load = t()
    ids = llm.get_tokenizer().apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    res = llm.generate([{"prompt_token_ids": list(ids)}],
                       SamplingParams(temperature=0, max_tokens=1), use_tqdm=False)[0]
    prefill = t()
    own = llm.generate([{"prompt_token_ids": list(ids)}],
                       SamplingParams(temperature=0, max_tokens=N, ignore_eos=True),
                       use_tqdm=False)[0]
    C.save_json(work / "vllm_prefill.json", {
        "load_s": load, "prefill_s": prefill, "prompt_tokens": len(ids),
        "first": res.outputs[0].token_ids[0], "message": res.kv_transfer_params["avp_message"],
        "own_tokens": list(own.outputs[0].token_ids)})


def llama_continue(work: Path) -> None:
    import llama_side as L
    from avp_engines import llama

    import avp_codec as avp

    info = C.load_json(work / "vllm_prefill.json")
    t = C.Timer()
    llm = L.open_llama()
    load = t()
    msg = avp.decode_file(info["message"])
    ids = C.token_ids(msg)
    mid = bytes(msg.get(avp.MetaKey.MODEL_ID))  # type: ignore[arg-type]
    state = llama.message_to_state(msg, llama.LlamaTarget("f16", "f16", True, "llama"),
                                   model_id=mid)
    convert = t()
    L.set_state(llm, state, ids)
    install = t()
    toks = L.greedy(llm, N, info["first"])
    gen = t()
    llm.reset()
    llm.eval(ids)
    own_prefill = t()
    own = L.greedy(llm, N)
    C.save_json(work / "llama_continue.json", {
        "load_s": load, "convert_s": convert, "install_s": install, "generate_s": gen,
        "own_prefill_s": own_prefill, "state_bytes": len(state), "tokens": toks,
        "own_tokens": own, "text": llm.detokenize(toks).decode("utf-8", "replace")})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", nargs="?", default="demo", choices=["demo", "vllm", "llama"])
    ap.add_argument("--work", type=Path, default=C.ROOT / ".engine-work" / "demo")
    ap.add_argument("--prompt", default=C.PROMPT)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    if a.role == "vllm":
        vllm_prefill(a.work, a.prompt)
        return
    if a.role == "llama":
        llama_continue(a.work)
        return
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for f in a.work.glob("*.avp"):
        f.unlink()
    me = str(Path(__file__).resolve())
    t0 = time.perf_counter()
    print("[demo] vLLM (vllm-cpu 0.32.0, AVP connector as producer) prefills the prompt ...",
          flush=True)
    (C.ROOT / ".engine-logs").mkdir(exist_ok=True)
    with open(C.ROOT / ".engine-logs/demo-vllm.log", "w") as log:
        subprocess.run([str(C.ROOT / ".venv-vllm/bin/python"), me, "vllm", "--work",
                        str(a.work), "--prompt", a.prompt], check=True, env=env, timeout=1800,
                       stdout=log, stderr=subprocess.STDOUT)
    v = C.load_json(a.work / "vllm_prefill.json")
    size = os.path.getsize(v["message"])
    print(f"[demo]   engine start {v['load_s']:.1f} s, prefill of {v['prompt_tokens']} tokens "
          f"+ first token {v['prefill_s']:.2f} s; AVP message {size:,} bytes -> {v['message']}")
    print("[demo] llama.cpp (llama-cpp-python 0.3.36, SmolLM2 GGUF) continues from the message "
          "...", flush=True)
    subprocess.run([str(C.ROOT / ".venv-llama/bin/python"), me, "llama", "--work",
                    str(a.work)], check=True, env=env, timeout=900)
    r = C.load_json(a.work / "llama_continue.json")
    with_vllm = _agree(r["tokens"], v["own_tokens"])
    with_llama = _agree(r["tokens"], r["own_tokens"])
    print(f"[demo]   model load {r['load_s']:.1f} s; AVP -> llama.cpp state {r['convert_s']:.3f} "
          f"s ({r['state_bytes']:,} bytes); install {r['install_s']:.3f} s; {N} tokens "
          f"{r['generate_s']:.2f} s (its own prefill would have cost {r['own_prefill_s']:.2f} s)")
    print(f"[demo]   continuation: {json.dumps(r['text'])}")
    print(f"[demo]   leading tokens that agree: {with_vllm}/{N} with vLLM's own continuation, "
          f"{with_llama}/{N} with llama.cpp computing the prompt itself (different weights: "
          f"float32 vs Q4_1); total {time.perf_counter() - t0:.0f} s")
    if with_vllm < 16:
        raise SystemExit(1)


def _agree(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


if __name__ == "__main__":
    main()
