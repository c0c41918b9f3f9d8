"""The Transformers side of the pairwise runs (project venv): prepare the prompt, baseline and
the messages the other engines consume; continue from the messages they produce."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

import avp_codec as avp  # noqa: E402


def _connector():  # type: ignore[no-untyped-def]
    import torch
    from avp_runtime import Connector

    torch.set_num_threads(2)
    return Connector.default()


def prepare(work: Path, prompt: str) -> None:
    c = _connector()
    ids = c.encode_prompt(prompt)
    t = C.Timer()
    base = c.generate(ids, max_new_tokens=C.N_NEW, stop_ids=set())
    t_base = t()
    ctx = c.prefill(ids)
    t_prefill = t()
    n = c.export_file(ctx, work / "hf.avp")
    t_export = t()
    msg = avp.decode_file(work / "hf.avp")
    (work / "hf_zero.avp").write_bytes(avp.encode(C.zeroed(msg)))
    (work / "hf_othermodel.avp").write_bytes(avp.encode(C.other_model(msg)))
    C.corrupt_file(work / "hf.avp", work / "hf_corrupt.avp")
    other = c.prefill(c.encode_prompt(C.OTHER_PROMPT, chat=False))
    c.export_file(other, work / "hf_otherprompt.avp")
    C.save_json(work / "hf_prepare.json", {
        "prompt_ids": ids, "baseline": base.token_ids, "baseline_s": round(t_base, 3),
        "prefill_s": t_prefill, "export_s": t_export, "bytes": n,
        "model_id": c.model_id.hex()})


def cont(work: Path, msg_name: str, first: int, tag: str) -> None:
    """Continue from a message: feed the sender's first generated token, 15 more greedily."""
    c = _connector()
    out: dict[str, object] = {"message": msg_name, "first": first}
    t = C.Timer()
    try:
        ctx = c.import_(work / msg_name)
    except avp.AvpError as e:
        out["refused"] = e.code.name
        C.save_json(work / f"hf_continue_{tag}.json", out)
        return
    out["import_s"] = t()
    g = c.generate([first], context=ctx, max_new_tokens=C.N_NEW - 1, stop_ids=set())
    out["gen_s"] = t()
    out["tokens"] = [first, *g.token_ids]
    C.save_json(work / f"hf_continue_{tag}.json", out)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("work", type=Path)
    p.add_argument("--prompt", default=C.PROMPT)
    q = sub.add_parser("continue")
    q.add_argument("work", type=Path)
    q.add_argument("message")
    q.add_argument("first", type=int)
    q.add_argument("tag")
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a.work, a.prompt)
    else:
        cont(a.work, a.message, a.first, a.tag)


if __name__ == "__main__":
    main()
