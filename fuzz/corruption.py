"""Corruption campaign: every single-bit flip, every truncation and a seeded sample of splices of
representative messages, each decoded by ``avp.decode`` and by the incremental ``avp.Decoder``.

Each corrupted input ends in one of four outcomes:

- ``detected``: an ``AvpError`` (its code is counted);
- ``same``: it differs from the original only in the preamble's minor version and decodes to
  the original logical message: a newer minor is accepted by design (R-3.3) and carries no
  content. (Any other change that decodes to the original meaning counts as ``silent``.)
- ``original``: a splice that reassembles a different one of the original messages byte for
  byte in meaning (possible when two messages share their tensor sections);
- ``silent``: it decodes to a *different* valid message. That is the failure the test forbids.

``python fuzz/corruption.py [--splices N] [--write benchmarks/results/hardening_corruption.md]``
prints (and writes) the detection rate and the code histogram. tests/hardening/test_corruption.py
runs the same campaign and asserts it.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import avp_fuzz  # noqa: E402
import avp_fuzz_seeds  # noqa: E402

import avp_codec as avp  # noqa: E402


@dataclass
class Tally:
    inputs: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    same: list[str] = field(default_factory=list)  # where a corruption left the meaning intact
    original: int = 0
    silent: list[str] = field(default_factory=list)
    disagree: list[str] = field(default_factory=list)  # decode vs Decoder differ

    @property
    def detected(self) -> int:
        return sum(self.codes.values())


def _only_minor_differs(buf: bytes, orig: bytes) -> bool:
    """Whether ``buf`` differs from ``orig`` only in the preamble's minor version (bytes 10-11)."""
    return len(buf) == len(orig) and buf[:10] == orig[:10] and buf[12:] == orig[12:]


def _classify(buf: bytes, label: str, orig: bytes, mine: str, originals: dict[str, str],
              t: Tally, incremental: bool) -> None:
    t.inputs += 1
    res = avp_fuzz.decode_outcome(buf)
    if incremental:
        inc = avp_fuzz.incremental(buf, [len(buf)])
        if not (inc[0] == "err" and inc[1] == avp.ErrorCode.LIMIT_BUFFER) and \
                not avp_fuzz.same(res, inc):
            t.disagree.append(label)
    if res[0] == "err":
        t.codes[res[1].name] += 1
        return
    got = _meaning(res[1])
    if got == mine and _only_minor_differs(buf, orig):
        t.same.append(label)
    elif got in originals.values():
        t.original += 1
    else:
        t.silent.append(label)


def _meaning(msg: avp.Message) -> str:
    msg.minor = 0  # the minor version carries no content (3.1)
    return avp_fuzz.outcome(msg)


def _originals(messages: dict[str, bytes]) -> dict[str, str]:
    return {name: _meaning(avp.decode(buf, keys=avp_fuzz.KEYS)) for name, buf in messages.items()}


def bit_flips(messages: dict[str, bytes], incremental_every: int = 1) -> dict[str, Tally]:
    """Every single-bit flip of every message; the Decoder runs on every n-th flip too."""
    originals = _originals(messages)
    out = {}
    for name, buf in messages.items():
        t = Tally()
        b = bytearray(buf)
        for bit in range(8 * len(buf)):
            b[bit // 8] ^= 1 << (bit % 8)
            _classify(bytes(b), f"{name} byte {bit // 8} bit {bit % 8}", buf, originals[name],
                      originals, t, bit % incremental_every == 0)
            b[bit // 8] ^= 1 << (bit % 8)
        out[name] = t
    return out


def truncations(messages: dict[str, bytes]) -> tuple[Tally, Counter[str]]:
    """Every proper prefix of every message (both decoders); returns the tally and codes."""
    originals = _originals(messages)
    t = Tally()
    for name, buf in messages.items():
        for n in range(len(buf)):
            _classify(buf[:n], f"{name}[:{n}]", buf, originals[name], originals, t, True)
    return t, t.codes


def splices(messages: dict[str, bytes], count: int, seed: int = 0) -> Tally:
    """Seeded random splices: a prefix of one message joined to a suffix of another (or the
    same), a block copied over another position, a range deleted or duplicated, two
    8-aligned blocks swapped."""
    rng = random.Random(seed)
    originals = _originals(messages)
    names = sorted(messages)
    t = Tally()
    done = 0
    while done < count:
        a_name = rng.choice(names)
        a, b = messages[a_name], messages[rng.choice(names)]
        op = rng.randrange(5)
        i, j = rng.randrange(len(a) + 1), rng.randrange(len(b) + 1)
        n = rng.choice((1, 4, 8, 16, 24, 32, 64, rng.randrange(1, 256)))
        if op == 0:
            out = a[:i] + b[j:]
        elif op == 1:
            out = a[:i] + b[j:j + n] + a[i + n:]
        elif op == 2:
            out = a[:i] + a[i + n:]
        elif op == 3:
            out = a[:i] + a[i:i + n] + a[i:]
        else:
            i, j = i - i % 8, rng.randrange(0, len(a) + 1, 8) if len(a) >= 8 else 0
            lo, hi = sorted((i, j))
            if hi - lo < n:
                continue
            out = a[:lo] + a[hi:hi + n] + a[lo + n:hi] + a[lo:lo + n] + a[hi + n:]
        if out in messages.values():
            continue  # not a corruption
        _classify(out, f"splice op{op} {a_name} i={i} j={j} n={n}", a, originals[a_name],
                  originals, t, done % 4 == 0)
        done += 1
    return t


def campaign(splice_count: int = 20000, incremental_every: int = 1) -> dict[str, Any]:
    reps = avp_fuzz_seeds.representative()
    extra = {k: v for k, v in avp_fuzz_seeds.built().items() if k not in reps}
    flips = bit_flips(reps, incremental_every)
    trunc, _ = truncations(reps)
    spl = splices({**reps, **extra}, splice_count)
    return {"sizes": {k: len(v) for k, v in reps.items()}, "flips": flips, "truncations": trunc,
            "splices": spl}


def report(result: dict[str, Any]) -> str:
    lines = ["# Corruption detection (hardening, issue 7)", "",
             "Generated by `python fuzz/corruption.py --write "
             "benchmarks/results/hardening_corruption.md`; asserted by "
             "tests/hardening/test_corruption.py. Each corrupted input is decoded by `avp.decode` "
             "and by the incremental `avp.Decoder` (fed whole; every 4th splice too), which "
             "must agree. *same* = decodes to the original logical message (only the "
             "preamble's minor version can do this, by design: R-3.3); *silent* = decodes to "
             "a different valid message (must be 0).", "",
             "| corruption | inputs | detected (AvpError) | same message | reassembled another "
             "original | silent | decoders disagree | detected of meaning-changing |",
             "|---|---|---|---|---|---|---|---|"]

    def row(label: str, t: Tally) -> str:
        changed = t.inputs - len(t.same) - t.original  # corruptions that change the meaning
        rate = t.detected / changed if changed else 1.0
        return (f"| {label} | {t.inputs} | {t.detected} | {len(t.same)} | {t.original} | "
                f"{len(t.silent)} | {len(t.disagree)} | {100 * rate:.2f}% |")

    total = Counter[str]()
    for name, t in result["flips"].items():
        lines.append(row(f"bit flips, {name} ({result['sizes'][name]} B)", t))
        total.update(t.codes)
    for label, key in (("truncations (every prefix)", "truncations"),
                       ("splices (seeded sample)", "splices")):
        lines.append(row(label, result[key]))
        total.update(result[key].codes)
    same = sorted({s.split(" bit")[0] for t in result["flips"].values() for s in t.same})
    lines += ["", f"Flips that leave the meaning intact: {', '.join(same) or 'none'} "
              "(bytes 10-11 are the preamble minor version).", "",
              "## Error-code histogram (all corruptions, `avp.decode`)", "",
              "| code | count |", "|---|---|"]
    lines += [f"| {code} | {n} |" for code, n in total.most_common()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--splices", type=int, default=20000)
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    text = report(campaign(args.splices))
    print(text)
    if args.write:
        args.write.write_text(text)


if __name__ == "__main__":
    main()
