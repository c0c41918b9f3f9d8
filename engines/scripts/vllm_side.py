"""The vLLM side of the pairwise runs (.venv-vllm): one engine with the AVP connector in
kv_both; a baseline request that also produces vllm.avp, then the same prompt against each
message the Transformers side prepared (hit, zeroed control, and the three refusals)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

STEPS = [("baseline", None), ("hf", "hf.avp"), ("hf_zero", "hf_zero.avp"),
         ("othermodel", "hf_othermodel.avp"), ("otherprompt", "hf_otherprompt.avp"),
         ("corrupt", "hf_corrupt.avp")]


def engine(work: Path, policy: str = "recompute"):  # type: ignore[no-untyped-def]
    from vllm import LLM
    from vllm.config import KVTransferConfig

    ktc = KVTransferConfig(
        kv_connector="AvpConnector", kv_connector_module_path="avp_engines.vllm_connector",
        kv_role="kv_both", kv_load_failure_policy=policy,  # type: ignore[arg-type]
        kv_connector_extra_config={"save_dir": str(work / "vllm_out"),
                                   "source": str(work / "vllm_in"),
                                   "journal": str(work / "journal.jsonl")})
    return LLM(model=str(C.MODEL_DIR), dtype="float32", enforce_eager=True, max_model_len=512,
               block_size=32, enable_prefix_caching=False, kv_transfer_config=ktc,
               disable_log_stats=True)


def journal(work: Path, since: int) -> list[dict[str, object]]:
    path = work / "journal.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()[since:]
    import json

    return [json.loads(x) for x in lines]


def run(work: Path, only: list[str] | None) -> None:
    from vllm import SamplingParams

    prep = C.load_json(work / "hf_prepare.json")
    ids = prep["prompt_ids"]
    for d in ("vllm_in", "vllm_out"):
        shutil.rmtree(work / d, ignore_errors=True)
        (work / d).mkdir(parents=True)
    (work / "journal.jsonl").unlink(missing_ok=True)
    t = C.Timer()
    llm = engine(work)
    out: dict[str, object] = {"load_s": t()}
    sp = SamplingParams(temperature=0, max_tokens=C.N_NEW, ignore_eos=True)
    for tag, name in STEPS:
        if only and tag not in only:
            continue
        for f in (work / "vllm_in").iterdir():
            f.unlink()
        if name is not None:
            shutil.copy(work / name, work / "vllm_in" / name)
        n0 = len((work / "journal.jsonl").read_text().splitlines()) \
            if (work / "journal.jsonl").exists() else 0
        t()
        res = llm.generate([{"prompt_token_ids": ids}], sp, use_tqdm=False)[0]
        step = {"tokens": list(res.outputs[0].token_ids), "seconds": t(),
                "events": journal(work, n0), "params": res.kv_transfer_params}
        saved = (res.kv_transfer_params or {}).get("avp_message")
        if tag != "baseline" and saved and (work / "vllm.avp").exists():
            import avp_codec as avp

            # what the producer wrote for this request, against the baseline's own message
            step["saved_vs_baseline"] = C.kv_max_diff(avp.decode_file(saved),
                                                      avp.decode_file(work / "vllm.avp"))
        out[tag] = step
        if tag == "baseline" and res.kv_transfer_params:
            shutil.copy(res.kv_transfer_params["avp_message"], work / "vllm.avp")
            out["bytes"] = os.path.getsize(work / "vllm.avp")
    C.save_json(work / "vllm.json", out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    run(a.work, a.only)


if __name__ == "__main__":
    main()
