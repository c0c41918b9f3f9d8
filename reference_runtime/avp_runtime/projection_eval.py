"""Measure vocabulary-mediated projection quality: SmolLM2-135M -> Gemma-3-270M.

    python -m avp_runtime.projection_eval [--json out.json]

For each short prompt the source reads it and we take its last hidden state. Three ways to hand
the source's next step to the target, which then predicts the token after it:

* reference  the target reads the prompt, then the source's argmax token *as text*
             (what TEXT mode would deliver for a one-token handoff);
* projected  the target reads the prompt, then the projected soft token (PROJECTION mode);
* none       the target reads the prompt only (no handoff: the floor to beat).

Figures: how often the target's top-1 after `projected` equals its top-1 after `reference`, the
mean KL(reference || projected) of its next-token distributions, the same two for `none`, how
often the projection's heaviest shared token is the source's own argmax, and the payload size.
Both models read the raw prompt (no chat template: Gemma-3-270M here is a base model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

import avp_codec as avp

from . import identity, models
from . import projection as proj

PROMPTS = [
    "The capital of France is",
    "One, two, three, four,",
    "The opposite of hot is",
    "Monday, Tuesday,",
    "The sun rises in the",
    "Water freezes at zero degrees",
    "The largest planet in our solar system is",
    "She opened the door and",
    "2 + 2 =",
    "The color of the sky on a clear day is",
    "Cats and",
    "In 1492, Columbus sailed across the",
    "The chemical symbol for gold is",
    "To be or not to",
    "A triangle has three",
    "The first letter of the alphabet is",
    "Paris is a city in",
    "He drank a glass of",
    "The quick brown fox jumps over the",
    "January, February,",
]


@torch.no_grad()
def _next_logprobs(model: Any, embeds: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(model(inputs_embeds=embeds).logits[0, -1].float(), dim=-1)


def _kl(p_log: torch.Tensor, q_log: torch.Tensor) -> float:
    return float((p_log.exp() * (p_log - q_log)).sum())


@torch.no_grad()
def evaluate(src: Any, src_tok: Any, tgt: Any, tgt_tok: Any, *, prompts: list[str] = PROMPTS,
             temperature: float = 1.0, table: proj.ProjectionTable | None = None,
             source_model_id: bytes = b"\0" * 32) -> dict[str, Any]:
    table = table or proj.ProjectionTable.build(src_tok, tgt, tgt_tok)
    emb = tgt.get_input_embeddings()
    pos_of = {int(s): i for i, s in enumerate(table.src_ids.tolist())}
    rows = []
    sizes: dict[str, int] = {}
    for prompt in prompts:
        s_ids = torch.tensor([src_tok(prompt)["input_ids"]])
        h = proj.last_hidden(src, s_ids)[:, -1:, :]
        top_src = int(src.get_output_embeddings()(h)[0, -1].argmax())
        soft = proj.project(src, h, table, temperature=temperature)
        msg = proj.projection_message(soft, table, source_model_id=source_model_id,
                                      temperature=temperature)
        sizes["float32"] = len(avp.encode(msg))
        msg16 = proj.projection_message(soft, table, source_model_id=source_model_id,
                                        temperature=temperature, dtype=avp.Dtype.BFLOAT16)
        sizes["bfloat16"] = len(avp.encode(msg16))
        # What the receiver gets is what crossed the wire: decode the float32 message.
        soft_rx = proj.read_projection(avp.decode(avp.encode(msg)), model_id=table.target_model_id,
                                       tokenizer_id=table.target_tokenizer_id,
                                       hidden_size=soft.shape[-1])
        t_ids = torch.tensor([tgt_tok(prompt)["input_ids"]])
        text = src_tok.decode([top_src])
        ref_ids = torch.cat([t_ids, torch.tensor([tgt_tok(text, add_special_tokens=False)
                                                  ["input_ids"]])], dim=1)
        base = emb(t_ids)
        ref = _next_logprobs(tgt, emb(ref_ids))
        got = _next_logprobs(tgt, torch.cat([base, soft_rx.to(base.dtype)], dim=1))
        none = _next_logprobs(tgt, base)
        # The projection's weights over S: is the source's own choice the heaviest?
        w_logits = h.float() @ src.get_output_embeddings().weight[table.src_ids].float().T
        heaviest = int(table.src_ids[int(w_logits[0, -1].argmax())])
        rows.append({
            "prompt": prompt, "source_token": text,
            "reference_top1": tgt_tok.decode([int(ref.argmax())]),
            "projected_top1": tgt_tok.decode([int(got.argmax())]),
            "none_top1": tgt_tok.decode([int(none.argmax())]),
            "projected_agrees": int(ref.argmax()) == int(got.argmax()),
            "none_agrees": int(ref.argmax()) == int(none.argmax()),
            "kl_projected": _kl(ref, got), "kl_none": _kl(ref, none),
            "source_token_shared": top_src in pos_of,
            "heaviest_is_source_top1": heaviest == top_src,
        })
    n = len(rows)
    return {
        "source": "SmolLM2-135M-Instruct", "target": "Gemma-3-270M", "prompts": n,
        "temperature": temperature, "shared_vocab": table.shared,
        "payload_bytes": sizes, "hidden_target": int(table.target_rows.shape[1]),
        "top1_agreement_projected": sum(r["projected_agrees"] for r in rows) / n,
        "top1_agreement_none": sum(r["none_agrees"] for r in rows) / n,
        "mean_kl_projected": sum(r["kl_projected"] for r in rows) / n,
        "mean_kl_none": sum(r["kl_none"] for r in rows) / n,
        "heaviest_is_source_top1": sum(r["heaviest_is_source_top1"] for r in rows) / n,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None, help="write the full result here")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    s = models.load_model(models.DEFAULT_MODEL)
    g = models.load_model(models.GEMMA_MODEL)
    table = proj.ProjectionTable.build(s.tokenizer, g.model, g.tokenizer,
                                       target_model_id=identity.model_id(g.model))
    res = evaluate(s.model, s.tokenizer, g.model, g.tokenizer, temperature=args.temperature,
                   table=table, source_model_id=identity.model_id(s.model))
    res["seconds"] = round(time.perf_counter() - t0, 1)
    summary = {k: v for k, v in res.items() if k != "rows"}
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
