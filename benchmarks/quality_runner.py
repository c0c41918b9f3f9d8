"""The model side of benchmarks/quality_bench.py: every handoff of one item, scored.

Kept apart from quality_bench.py so that its statistics and reporting import without torch.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import quality_tasks as qt
import torch
from avp_runtime import Connector, models
from avp_runtime import projection as proj
from quality_bench import ADAPTIVE_BUDGET, LATENT_STEPS, ROWS

import avp_codec as avp
from avp_codec import quant

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import fidelity_bench as fb  # noqa: E402  (the adaptive options and profile live there)

GREEDY_MAX = 4  # tokens of A's own answer when it is not the gold one


def lossless_codec() -> avp.Codec:
    """The best registered lossless codec (floatplane_zstd where this codec has it)."""
    return getattr(avp.Codec, "FLOATPLANE_ZSTD", avp.Codec.BYTEPLANE_ZSTD)


def config(threads: int) -> dict[str, Any]:
    adaptive = fb.adaptive_description()
    cfg = {
        "model": models.DEFAULT_MODEL,
        "gemma": models.GEMMA_MODEL,
        "rows": list(ROWS),
        "latent_steps": LATENT_STEPS,
        "lossless_codec": lossless_codec().name,
        "adaptive": adaptive,
        "task_seed": qt.SEED,
    }
    cfg["fingerprint"] = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
    cfg["machine"] = (f"{platform.machine()} CPU, {threads} torch thread(s), "
                      f"torch {torch.__version__}")
    return cfg


@dataclass
class Env:
    c: Connector
    gemma: Any
    gtok: Any
    table: proj.ProjectionTable
    end_turn: int
    codecs: dict[str, Callable[[avp.Message], avp.Message]]


def _env() -> Env:
    c = Connector.default()
    g = models.load_gemma()
    table = proj.ProjectionTable.build(c.tokenizer, g.model, g.tokenizer,
                                       target_model_id=Connector(g.model, g.tokenizer).model_id)
    q = {name: quant.preset(name) for name in ("int8", "int4", "int4_fine")}
    codecs: dict[str, Callable[[avp.Message], avp.Message]] = {
        f"kv_{name}": (lambda m, p=p: quant.quantize_message(m, p)) for name, p in q.items()
    }
    codecs["kv_adaptive"] = lambda m: quant.quantize_message(
        m, fb.adaptive_policy(m, ADAPTIVE_BUDGET))
    end = int(c.tokenizer.convert_tokens_to_ids("<|im_end|>"))
    return Env(c, g.model.eval(), g.tokenizer, table, end, codecs)


def _split(tok: Any, cloze: str, answer: str) -> tuple[list[int], list[int]]:
    """(cloze ids, gold answer ids) such that cloze + gold tokenizes `cloze answer`."""
    both = [int(i) for i in tok(f"{cloze} {answer}", add_special_tokens=False)["input_ids"]]
    cl = [int(i) for i in tok(cloze, add_special_tokens=False)["input_ids"]]
    if both[:len(cl)] != cl:
        raise ValueError(f"cloze {cloze!r} does not tokenize as a prefix of its answer")
    return cl, both[len(cl):]


def _score(tok: Any, logits: torch.Tensor, gold: list[int]) -> dict[str, Any]:
    """`logits` [n + 1, vocab] at the positions predicting gold[0..n-1] and the one after."""
    pred = logits.argmax(-1).tolist()
    lp = torch.log_softmax(logits[: len(gold)].float(), -1)
    gold_lp = float(lp[torch.arange(len(gold)), torch.tensor(gold)].sum())
    ok = qt.exact_match(pred[: len(gold)], gold, tok.decode([pred[len(gold)]]))
    return {"correct": ok, "logprob": round(gold_lp, 4)}


def _smol_logits(c: Connector, ids: list[int], first: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(last-layer states [1, L, H], logits from position first-1 to the end)."""
    h = proj.last_hidden(c.model, torch.tensor([ids]))
    with torch.inference_mode():
        logits = c.model.get_output_embeddings()(h[0, first - 1:]).float()
    return h, logits


def _a_answer(env: Env, ids: list[int], gold: list[int], h: torch.Tensor, first: int,
              direct_ok: bool) -> tuple[str, torch.Tensor]:
    """A's own answer word and the states that predicted its tokens (the projection's source).

    When A got the item right its greedy tokens are the gold ones, so the teacher-forced states
    are the greedy ones; otherwise A's answer is generated (never conditioned on the gold)."""
    c, tok = env.c, env.c.tokenizer
    if direct_ok:
        return tok.decode(gold).strip(), h[:, first - 1: first - 1 + len(gold)]
    seq, taken, states = list(ids[:first]), [], []
    for _ in range(GREEDY_MAX):
        hs = proj.last_hidden(c.model, torch.tensor([seq]))[:, -1:]
        with torch.inference_mode():
            nxt = int(c.model.get_output_embeddings()(hs[0, -1]).argmax())
        if taken and not qt.continues_word(tok.decode([nxt])):
            break
        taken.append(nxt)
        states.append(hs)
        seq.append(nxt)
    return tok.decode(taken).strip(), torch.cat(states, dim=1)


def _batched_cache(c: Connector, contexts: list[Any]) -> Any:
    from transformers import DynamicCache

    cache = DynamicCache(config=c.model.config)
    for i in range(len(contexts[0].cache.layers)):
        k = torch.cat([ctx.cache.layers[i].keys for ctx in contexts], dim=0)
        v = torch.cat([ctx.cache.layers[i].values for ctx in contexts], dim=0)
        cache.update(k, v, i)
    return cache


def _kv_rows(env: Env, a_ids: list[int], b_ids: list[int], first: int, gold: list[int]
             ) -> dict[str, dict[str, Any]]:
    """Every KV handoff: one prefill by A, one wire message per codec, one batched forward of B
    over all imported caches (they have the same length), plus the latent handoff."""
    c, tok = env.c, env.c.tokenizer
    pre = c.prefill(a_ids[:-1])
    ctx = c.think([a_ids[-1]], 0, context=pre)
    lat = c.think([a_ids[-1]], LATENT_STEPS, context=pre)
    wires = {
        "kv_fp32": c.export_bytes(ctx),
        "kv_bf16": c.export_bytes(ctx, dtype=torch.bfloat16),
        "kv_lossless": c.export_bytes(ctx, dtype=torch.bfloat16, codec=lossless_codec()),
    }
    msg16 = avp.decode(wires["kv_bf16"])
    for key, make in env.codecs.items():
        wires[key] = avp.encode(make(msg16))
    keys = list(wires)
    contexts = [c.import_(wires[k]) for k in keys]
    n = len(b_ids)
    x = torch.tensor([b_ids]).expand(len(keys), n)
    out = c.forward(_batched_cache(c, contexts), ctx.context_length, input_ids=x)
    rows = {}
    for i, key in enumerate(keys):
        rows[key] = _score(tok, out.logits[i, first - 1:], gold) | {"bytes": len(wires[key])}
    wire = c.export_bytes(lat)
    lctx = c.import_(wire)
    out = c.forward(lctx.fork(), lctx.context_length, input_ids=torch.tensor([b_ids]))
    rows["latent"] = _score(tok, out.logits[0, first - 1:], gold) | {"bytes": len(wire)}
    return rows


def _gemma_rows(env: Env, item: qt.Item, hint_text: str, states: torch.Tensor
                ) -> dict[str, dict[str, Any]]:
    g, gt = env.gemma, env.gtok
    emb = g.get_input_embeddings()
    cl, gold = _split(gt, f"\nAnswer: {item.cloze}", item.answer)
    tail = cl + gold
    keep = len(gold) + 1

    def run(prefix: list[int], soft: torch.Tensor | None = None) -> dict[str, Any]:
        with torch.inference_mode():
            parts = [emb(torch.tensor([prefix]))]
            if soft is not None:
                parts.append(soft.to(parts[0].dtype))
            parts.append(emb(torch.tensor([tail])))
            logits = g(inputs_embeds=torch.cat(parts, dim=1), logits_to_keep=keep).logits
        return _score(gt, logits[0], gold)

    ids = lambda s: [int(i) for i in gt(s)["input_ids"]]  # noqa: E731  (with <bos>)
    q = f"Question: {item.question}"
    rows = {"gemma_none": run(ids(q)) | {"bytes": 0}}
    tmsg = avp.encode(avp.Message(kind=avp.Kind.TEXT,
                                  entries=[avp.Entry.of(avp.MetaKey.TEXT, hint_text)]))
    text = str(avp.decode(tmsg).get(avp.MetaKey.TEXT))
    rows["gemma_text"] = run(ids(f"{q}\nHint: {text}")) | {"bytes": len(tmsg)}
    soft = proj.project(env.c.model, states, env.table)
    wire = avp.encode(proj.projection_message(soft, env.table, source_model_id=env.c.model_id))
    got = proj.read_projection(avp.decode(wire), model_id=env.table.target_model_id,
                               tokenizer_id=env.table.target_tokenizer_id,
                               hidden_size=int(soft.shape[-1]))
    rows["gemma_projected"] = run(ids(f"{q}\nHint:"), got) | {"bytes": len(wire)}
    return rows


def run_item(env: Env, item: qt.Item) -> dict[str, Any]:
    c, tok = env.c, env.c.tokenizer
    chat = c.encode_prompt(f"{item.document}\n\nQuestion: {item.question}")
    split = len(chat) - 1 - chat[::-1].index(env.end_turn)  # the user turn's <|im_end|>
    cl, gold = _split(tok, item.cloze, item.answer)
    ids = chat + cl + gold
    first = len(chat) + len(cl)  # index of the first gold token
    rows: dict[str, dict[str, Any]] = {}
    h, logits = _smol_logits(c, ids, first)
    rows["direct"] = _score(tok, logits, gold)
    word, states = _a_answer(env, ids, gold, h, first, rows["direct"]["correct"])
    a_text = f"{item.cloze} {word}."
    tmsg = avp.encode(avp.Message(kind=avp.Kind.TEXT,
                                  entries=[avp.Entry.of(avp.MetaKey.TEXT, a_text)]))
    got = str(avp.decode(tmsg).get(avp.MetaKey.TEXT))
    # B reads A's message where A read the document (the same prompt otherwise).
    b_chat = c.encode_prompt(f"{got}\n\nQuestion: {item.question}")
    _, tl = _smol_logits(c, b_chat + cl + gold, len(b_chat) + len(cl))
    rows["text"] = _score(tok, tl, gold) | {"bytes": len(tmsg)}
    b_ids = chat[split:] + cl + gold
    rows |= _kv_rows(env, chat[:split], b_ids, len(chat) - split + len(cl), gold)
    rows |= _gemma_rows(env, item, a_text, states)
    return {**item.to_json(), "a_answer": word, "rows": {k: rows[k] for k in ROWS}}


def adaptive_fingerprint() -> str:
    """The adaptive policy's share of the settings fingerprint: a record's kv_adaptive row
    carries it once rescored, so a rescore resumes where it stopped."""
    desc = json.dumps(fb.adaptive_description(), sort_keys=True)
    return hashlib.sha256(desc.encode()).hexdigest()[:16]


def _rescore_one(c: Connector, rec: dict[str, Any], end_turn: int) -> dict[str, Any]:
    """kv_adaptive of one recorded item again (the other rows stay as recorded), with raw bf16
    in the same batched forward as a check that the rest of the pipeline is unchanged."""
    tok = c.tokenizer
    chat = c.encode_prompt(f"{rec['document']}\n\nQuestion: {rec['question']}")
    split = len(chat) - 1 - chat[::-1].index(end_turn)
    cl, gold = _split(tok, rec["cloze"], rec["answer"])
    a_ids, b_ids = chat[:split], chat[split:] + cl + gold
    first = len(chat) - split + len(cl)
    ctx = c.think([a_ids[-1]], 0, context=c.prefill(a_ids[:-1]))
    bf16 = c.export_bytes(ctx, dtype=torch.bfloat16)
    msg16 = avp.decode(bf16)
    policy = fb.adaptive_policy(msg16, ADAPTIVE_BUDGET)
    wires = [bf16, avp.encode(quant.quantize_message(msg16, policy))]
    contexts = [c.import_(w) for w in wires]
    x = torch.tensor([b_ids]).expand(len(wires), len(b_ids))
    out = c.forward(_batched_cache(c, contexts), ctx.context_length, input_ids=x)
    check = _score(tok, out.logits[0, first - 1:], gold)
    row = _score(tok, out.logits[1, first - 1:], gold) | {"bytes": len(wires[1])}
    windows = {s.recent_window for ls in policy.layers.values() for s in (ls.key, ls.value)
               if s is not None}
    row |= {"adaptive": adaptive_fingerprint(), "recent_window": max(windows, default=0),
            "bf16_check": check["correct"] == rec["rows"]["kv_bf16"]["correct"]
            and abs(check["logprob"] - rec["rows"]["kv_bf16"]["logprob"]) < 2e-3}
    return row


def rescore_adaptive(log: Path, threads: int) -> None:
    """Replace the kv_adaptive row of every record in `log` by the current adaptive policy's
    (records already rescored with it are skipped; the file is rewritten after each item)."""
    torch.set_num_threads(threads)
    c = Connector.default()
    end = int(c.tokenizer.convert_tokens_to_ids("<|im_end|>"))
    fp = adaptive_fingerprint()
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    todo = [i for i, r in enumerate(lines) if r["rows"]["kv_adaptive"].get("adaptive") != fp]
    print(f"{len(lines) - len(todo)} items rescored, {len(todo)} to go", file=sys.stderr)
    for n, i in enumerate(todo):
        t0 = time.perf_counter()
        lines[i]["rows"]["kv_adaptive"] = _rescore_one(c, lines[i], end)
        tmp = log.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in lines))
        tmp.replace(log)
        r = lines[i]["rows"]["kv_adaptive"]
        print(f"[{n + 1}/{len(todo)}] {lines[i]['id']:24s} {'x' if r['correct'] else '.'} "
              f"w{r['recent_window']} {r['bytes']} B check {r['bf16_check']} "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def run(items: list[qt.Item], log: Path, threads: int) -> None:
    torch.set_num_threads(threads)
    env = _env()
    with log.open("a") as f:
        for n, item in enumerate(items):
            t0 = time.perf_counter()
            rec = run_item(env, item)
            rec["seconds"] = round(time.perf_counter() - t0, 2)
            f.write(json.dumps(rec) + "\n")
            f.flush()
            ok = "".join("x" if rec["rows"][k]["correct"] else "." for k in ROWS)
            print(f"[{n + 1}/{len(items)}] {item.id:24s} {ok} {rec['seconds']:.1f} s",
                  file=sys.stderr, flush=True)
