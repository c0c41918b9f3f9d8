"""`make engines`: SmolLM2-135M in Transformers, vLLM and llama.cpp, each in its own process and
venv, handing KV-caches to each other as AVP messages; writes benchmarks/results/engines.{json,md}.

Per pair X -> Y: X prefills the prompt and writes its KV as AVP (vLLM through the connector,
llama.cpp through avp_engines.llama, Transformers through avp_runtime); Y installs it (vLLM as
external prefix hits through the connector) and continues greedily. "identical" means Y's 16
tokens equal X's own greedy continuation. The negative control is the same message with K and V
zeroed: Y's continuation must change. K/V max diff compares X's message with Y's own KV of the
same prompt.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

import avp_codec as avp  # noqa: E402

ROOT = C.ROOT
PY = {"hf": ROOT / ".venv/bin/python", "vllm": ROOT / ".venv-vllm/bin/python",
      "llama": ROOT / ".venv-llama/bin/python"}
HERE = Path(__file__).resolve().parent
LOGS = ROOT / ".engine-logs"


def step(venv: str, script: str, *args: str, timeout: int = 1800) -> float:
    LOGS.mkdir(exist_ok=True)
    tag = "-".join(Path(x).name for x in args if not x.startswith("/"))
    log = LOGS / f"pairwise-{script.removesuffix('.py')}-{tag}.log"
    t = time.perf_counter()
    print(f"[engines] {venv}: {script} {' '.join(args)}", flush=True)
    with open(log, "a") as f:
        r = subprocess.run([str(PY[venv]), str(HERE / script), *args], stdout=f,
                           stderr=subprocess.STDOUT, timeout=timeout, cwd=ROOT,
                           env={**__import__("os").environ, "VLLM_CPU_KVCACHE_SPACE": "1",
                                "TOKENIZERS_PARALLELISM": "false"})
    dt = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"[engines] {script} {args} failed (exit {r.returncode}); see {log}")
    print(f"[engines]   done in {dt:.0f} s", flush=True)
    return dt


def _diff(work: Path, a: str, b: str) -> dict[str, float]:
    return C.kv_max_diff(avp.decode_file(work / a), avp.decode_file(work / b))


def table(work: Path) -> dict[str, Any]:
    hp = C.load_json(work / "hf_prepare.json")
    vl = C.load_json(work / "vllm.json")
    lm = C.load_json(work / "llama.json")
    hc = {t: C.load_json(work / f"hf_continue_{t}.json")
          for t in ("vllm", "vllm_zero", "llama", "llama_zero", "othermodel")}
    hf_base, v_base, l_base = hp["baseline"], vl["baseline"]["tokens"], lm["baseline"]
    size = {n: (work / n).stat().st_size for n in ("hf.avp", "vllm.avp", "llama.avp")}
    rows = []

    def row(pair: str, sender: list[int], got: list[int], zero: list[int],
            diff: dict[str, float], nbytes: int, send_s: float, recv_s: float,
            recv_base: list[int], note: str = "") -> None:
        rows.append({"pair": pair, "identical": got == sender, "same_as_receiver_baseline":
                     got == recv_base, "control_changed": zero != sender, "K_max_diff":
                     diff["K"], "V_max_diff": diff["V"], "bytes": nbytes, "sender_s": send_s,
                     "receiver_s": recv_s, "sender_tokens": sender, "receiver_tokens": got,
                     "control_tokens": zero, "note": note})

    loaded = [e for e in vl["hf"]["events"] if e["event"] == "loaded"]
    row("vLLM -> Transformers", v_base, hc["vllm"]["tokens"], hc["vllm_zero"]["tokens"],
        _diff(work, "vllm.avp", "hf.avp"), size["vllm.avp"], vl["baseline"]["seconds"],
        hc["vllm"]["import_s"] + hc["vllm"]["gen_s"], hf_base,
        "sender time: vLLM prefill + 16 tokens + streaming the message")
    row("Transformers -> vLLM", hf_base, vl["hf"]["tokens"], vl["hf_zero"]["tokens"],
        _diff(work, "hf.avp", "vllm.avp"), size["hf.avp"], hp["prefill_s"] + hp["export_s"],
        vl["hf"]["seconds"], v_base,
        f"vLLM loaded tokens {[(e['start'], e['stop']) for e in loaded]} of "
        f"{len(hp['prompt_ids'])} as external hits (whole blocks of 32), computed the rest")
    row("llama.cpp -> Transformers", l_base, hc["llama"]["tokens"], hc["llama_zero"]["tokens"],
        _diff(work, "llama.avp", "hf.avp"), size["llama.avp"],
        lm["prefill_s"] + lm["state_s"] + lm["to_avp_s"],
        hc["llama"]["import_s"] + hc["llama"]["gen_s"], hf_base,
        f"llama.cpp cache {lm['target']}; state {lm['state_bytes']} bytes")
    row("Transformers -> llama.cpp", hf_base, lm["hf"]["tokens"], lm["hf_zero"]["tokens"],
        _diff(work, "hf.avp", "llama.avp"), size["hf.avp"], hp["prefill_s"] + hp["export_s"],
        lm["hf"]["to_state_s"] + lm["hf"]["set_s"] + lm["hf"]["gen_s"], l_base)
    row("vLLM -> llama.cpp", v_base, lm["vllm"]["tokens"], lm["vllm_zero"]["tokens"],
        _diff(work, "vllm.avp", "llama.avp"), size["vllm.avp"], vl["baseline"]["seconds"],
        lm["vllm"]["to_state_s"] + lm["vllm"]["set_s"] + lm["vllm"]["gen_s"], l_base)
    refusals = {
        "vLLM, message for another MODEL_ID": _events(vl["othermodel"], v_base),
        "vLLM, message for another prompt": _events(vl["otherprompt"], v_base),
        "vLLM, message whose data fails its CRC (load-error path, recompute)":
            _events(vl["corrupt"], v_base),
        "llama.cpp converter, another MODEL_ID": lm["othermodel"].get("refused"),
        "Transformers runtime, another MODEL_ID": hc["othermodel"].get("refused"),
    }
    extra: dict[str, Any] = {"f16": {
        "own_round_trip_identical": lm["own_round_trip_identical"],
        "self_continuation_identical": lm["self"]["tokens"] == l_base,
        "hf_to_llama": _agree(lm["hf"]["tokens"], hf_base),
        "vllm_to_llama": _agree(lm["vllm"]["tokens"], v_base),
        "control_changed": lm["hf_zero"]["tokens"] != hf_base,
        "baseline_vs_hf": _agree(l_base, hf_base), "state_bytes": lm["state_bytes"],
        "avp_bytes": lm["bytes"]}}
    for q in ("q8_0", "q4_0"):
        p = work / f"llama_{q}.json"
        if p.exists():
            lq = C.load_json(p)
            extra[q] = {
                "own_round_trip_identical": lq["own_round_trip_identical"],
                "self_continuation_identical": lq["self"]["tokens"] == lq["baseline"],
                "hf_to_llama": _agree(lq["hf"]["tokens"], hf_base),
                "vllm_to_llama": _agree(lq["vllm"]["tokens"], v_base),
                "control_changed": lq["hf_zero"]["tokens"] != hf_base,
                "baseline_vs_hf": _agree(lq["baseline"], hf_base),
                "state_bytes": lq["state_bytes"], "avp_bytes": lq["bytes"]}
    return {"rows": rows, "refusals": refusals, "extra": extra,
            "prompt_tokens": len(hp["prompt_ids"]), "vllm_load_s": vl["load_s"],
            "llama_load_s": lm["load_s"]}


def _agree(got: list[int], want: list[int]) -> int:
    """How many leading tokens agree."""
    n = 0
    for a, b in zip(got, want, strict=False):
        if a != b:
            break
        n += 1
    return n


def _events(stepd: dict[str, Any], base: list[int]) -> str:
    ev = [f"{e['event']}" + (f" {e.get('code')}" if e.get("code") else "")
          for e in stepd["events"] if e["event"] != "saved"]
    same = "output = baseline" if stepd["tokens"] == base else "OUTPUT CHANGED"
    saved = stepd.get("saved_vs_baseline")
    if saved is not None:
        same += ("; the message the producer then saved equals the baseline's"
                 if saved == {"K": 0.0, "V": 0.0} else f"; SAVED MESSAGE DIFFERS {saved}")
    return f"{', '.join(ev) or 'no event'}; {same}"


def markdown(res: dict[str, Any]) -> str:
    out = ["# Engines: KV-caches handed between vLLM, llama.cpp and Transformers as AVP", "",
           f"Measured {res['date']} on {res['machine']} (2 shared cores, no GPU) by "
           "`make engines` (engines/scripts/run_pairwise.py). SmolLM2-135M-Instruct: "
           "Transformers and vLLM (vllm-cpu 0.32.0, CPU attention backend, float32) load the "
           "safetensors conversion of the GGUF, llama.cpp (llama-cpp-python 0.3.36) the Q4_1 "
           f"GGUF itself. Prompt: {res['prompt_tokens']} tokens (chat template); 16 greedy "
           "tokens. Times are wall seconds on a machine shared with other jobs: compare them "
           "within a row, not across runs.", "",
           "| pair | identical | control changed | K max diff | V max diff | message bytes | "
           "sender s | receiver s |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        out.append(f"| {r['pair']} | {'yes' if r['identical'] else 'NO'} | "
                   f"{'yes' if r['control_changed'] else 'NO'} | {r['K_max_diff']:.3g} | "
                   f"{r['V_max_diff']:.3g} | {r['bytes']:,} | {r['sender_s']:.1f} | "
                   f"{r['receiver_s']:.1f} |")
    out += ["", "Notes per pair:", ""]
    for r in res["rows"]:
        same = "also" if r["same_as_receiver_baseline"] else "NOT"
        out.append(f"- {r['pair']}: the receiver's continuation is {same} equal to its own "
                   f"baseline. {r['note']}".rstrip())
    out += ["", "Refusals (each must leave the engine serving):", ""]
    for k, v in res["refusals"].items():
        out.append(f"- {k}: {v}")
    out += ["", "llama.cpp cache types (f16 without flash attention, V transposed; q8_0 and q4_0 "
            "with flash attention, stored Hadamard-rotated by llama.cpp). Token columns: leading "
            "tokens of 16 that agree.", "",
            "| cache | own state -> AVP -> state byte-identical | own continuation identical | "
            "Transformers -> llama.cpp | vLLM -> llama.cpp | control changed | llama.cpp "
            "baseline vs Transformers | state bytes | AVP bytes |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, e in res["extra"].items():
        yn = {True: "yes", False: "NO"}
        out.append(f"| {name} | {yn[e['own_round_trip_identical']]} | "
                   f"{yn[e['self_continuation_identical']]} | {e['hf_to_llama']}/16 | "
                   f"{e['vllm_to_llama']}/16 | {yn[e['control_changed']]} | "
                   f"{e['baseline_vs_hf']}/16 | {e['state_bytes']:,} | {e['avp_bytes']:,} |")
    out.append("")
    return "\n".join(out)


def _continue(work: Path, hp: dict[str, Any], vl: dict[str, Any], lm: dict[str, Any]) -> None:
    """The Transformers receiver, one process per message (a fresh model each time)."""
    v0, l0 = str(vl["baseline"]["tokens"][0]), str(lm["baseline"][0])
    (work / "vllm_zero.avp").write_bytes(avp.encode(C.zeroed(avp.decode_file(work / "vllm.avp"))))
    (work / "llama_zero.avp").write_bytes(avp.encode(C.zeroed(avp.decode_file(work / "llama.avp"))))
    for name, first, tag in (("vllm.avp", v0, "vllm"), ("vllm_zero.avp", v0, "vllm_zero"),
                             ("llama.avp", l0, "llama"), ("llama_zero.avp", l0, "llama_zero"),
                             ("hf_othermodel.avp", str(hp["baseline"][0]), "othermodel")):
        step("hf", "hf_side.py", "continue", str(work), name, first, tag)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=ROOT / ".engine-work" / "pairwise")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--skip", nargs="*", default=[],
                    help="steps already done: hf vllm llama continue")
    a = ap.parse_args()
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    if "hf" not in a.skip:
        step("hf", "hf_side.py", "prepare", str(work))
    if "vllm" not in a.skip:
        step("vllm", "vllm_side.py", str(work), timeout=2400)
    if "llama" not in a.skip:
        step("llama", "llama_side.py", str(work))
        step("llama", "llama_side.py", str(work), "--quant", "q8_0")
        step("llama", "llama_side.py", str(work), "--quant", "q4_0")
    hp = C.load_json(work / "hf_prepare.json")
    vl = C.load_json(work / "vllm.json")
    lm = C.load_json(work / "llama.json")
    if "continue" not in a.skip:
        _continue(work, hp, vl, lm)
    res = table(work)
    res["date"] = time.strftime("%Y-%m-%d")
    res["machine"] = f"{platform.machine()} Linux, Python {platform.python_version()}"
    a.out.mkdir(parents=True, exist_ok=True)
    C.save_json(a.out / "engines.json", res)
    (a.out / "engines.md").write_text(markdown(res))
    print(markdown(res))
    bad = [r["pair"] for r in res["rows"] if not (r["identical"] and r["control_changed"])]
    if bad:
        raise SystemExit(f"[engines] not identical or control unchanged: {bad}")


if __name__ == "__main__":
    main()
