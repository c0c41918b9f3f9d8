"""Every bit flip, every truncation and a seeded sample of splices of representative messages
(KV with five tensors, a zstd/byteplane tensor, text, hello) is detected (issue 7, part 2).

The campaign lives in fuzz/corruption.py, which also writes
benchmarks/results/hardening_corruption.md with the detection rate and the code histogram.
"""

from __future__ import annotations

import avp_codec as avp

from . import _fuzzmods

corruption = _fuzzmods.load("corruption")
seeds = _fuzzmods.load("avp_fuzz_seeds")


def test_every_bit_flip_is_detected_or_harmless() -> None:
    reps = seeds.representative()
    assert set(reps) == {"kv_multi", "kv_zstd", "text", "hello"}
    for name, t in corruption.bit_flips(reps, incremental_every=5).items():
        assert t.inputs == 8 * len(reps[name])
        assert not t.silent, f"{name}: silently decoded to another message: {t.silent[:5]}"
        assert not t.disagree, f"{name}: decode and Decoder disagree: {t.disagree[:5]}"
        # The only flips that keep a valid message are those of the minor version (bytes
        # 10-11): a newer minor is accepted by design and changes no content.
        assert {s.split(" bit")[0] for s in t.same} <= {f"{name} byte 10", f"{name} byte 11"}
        assert t.detected == t.inputs - len(t.same)
        assert t.codes["SECTION_CHECKSUM"] > 0


def test_every_truncation_is_truncated() -> None:
    reps = seeds.representative()
    t, codes = corruption.truncations(reps)
    assert t.inputs == sum(len(b) for b in reps.values())
    # A proper prefix of a valid message is missing bytes and nothing else, so both decoders
    # must say exactly TRUNCATED (the empty input and magic prefixes included, R-3.1).
    assert dict(codes) == {"TRUNCATED": t.inputs}
    assert not t.disagree


def test_splices_are_detected() -> None:
    t = corruption.splices({**seeds.built()}, 3000, seed=11)
    assert t.inputs == 3000
    assert not t.silent, t.silent[:5]
    assert not t.disagree, t.disagree[:5]
    # "same" = only the minor version bytes changed (a copy landing on bytes 10-11).
    assert t.detected + t.original + len(t.same) == t.inputs
    assert len(t.codes) >= 5  # splices exercise many different checks, not one


def test_report_renders_the_campaign() -> None:
    reps = {"text": seeds.representative()["text"]}
    result = {"sizes": {"text": len(reps["text"])},
              "flips": corruption.bit_flips(reps, incremental_every=8),
              "truncations": corruption.truncations(reps)[0],
              "splices": corruption.splices(reps, 50)}
    text = corruption.report(result)
    assert "| bit flips, text (160 B) | 1280 | 1264 | 16 | 0 | 0 | 0 | 100.00% |" in text
    assert avp.ErrorCode.SECTION_CHECKSUM.name in text
