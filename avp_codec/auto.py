"""codec="auto" (issue 18 point 4): pick the codec that makes a handoff fastest over a link.

    from avp_codec import auto
    table = [auto.CodecProfile("raw", 1.0, 3e9, 5e9, True),
             auto.CodecProfile("floatplane_zstd", 1.52, 4.5e8, 9e8, True),
             auto.CodecProfile("int8", 1.88, 1.1e9, 1.6e9, False, agreement_pct=99.7)]
    best = auto.choose_codec(link_bps=125e6, profiles=table)             # lossless only
    best = auto.choose_codec(link_bps=125e6, profiles=table, floor=99.5)  # int8 allowed too

Pure: the caller measures the link rate and the table (benchmarks/handoff_bench.py does both);
measured_profile() turns repeated timings of a codec's whole handoff on this machine into a row
of the table (the median run sets the rate).
"""

from ._auto import (
    LOSSLESS,
    RAW,
    CodecProfile,
    admits,
    choose_codec,
    measured_profile,
    predict_seconds,
)

__all__ = ["LOSSLESS", "RAW", "CodecProfile", "admits", "choose_codec", "measured_profile",
           "predict_seconds"]
