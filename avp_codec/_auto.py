"""codec="auto": the codec that makes a handoff fastest over a given link (issue 18 point 4).

Pure: no I/O, no clock. The caller measures the inputs (its link rate, e.g. from earlier
transfers; the codecs' throughput on this machine; a lossy codec's fidelity) and passes them in.

A handoff is encode -> wire -> decode, pipelined tensor by tensor, so for a payload of N raw
bytes in k pieces the slowest stage sets the pace and the other two are paid for one piece each
(the first piece is encoded before it can be sent, the last decoded after it arrived):

    stages  = N / encode_bps,  N / size_ratio / link_bps,  N / decode_bps
    seconds = max(stages) + (sum(stages) - max(stages)) / k

On a machine with few cores the stages also compete for CPU: the encoder, the decoder and the
transport itself (the HTTP stack and the kernel copy every byte; `transport_bps` is how fast the
unshaped path moves bytes, i.e. its CPU cost per byte). With `cores` CPUs for all of it, the
handoff takes at least (encode + decode + wire bytes / transport_bps) / cores seconds:

    seconds = max(max(stages), cpu / cores) + (sum(stages) - max(stages)) / k

(both default to infinity: a perfect pipeline on an idle many-core machine). Measured on this
2-core machine (benchmarks/handoff_bench.py) zstd at 1 Gbps loses to raw although it wins the
pure pipeline model: the cores, not the link, were the bottleneck.

Compression pays when the wire is the slowest stage and the codec shrinks it more than its own
coding costs; on a fast link raw wins. Raw is always a candidate (a table without it is refused),
so the choice is never predicted slower than raw.

The fidelity floor says which codecs may be used at all: "lossless" (the default) admits only
bit-exact codecs; a number admits, besides those, lossy codecs whose measured top-1 agreement
(percent, e.g. from benchmarks/fidelity_bench.py) is at least that number.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from ._registry import ErrorCode
from .errors import AvpError

LOSSLESS = "lossless"
RAW = "raw"


def _bad(msg: str) -> AvpError:
    return AvpError(ErrorCode.INVALID_VALUE, msg, path="auto")


def _rate(x: float, what: str) -> float:
    if not isinstance(x, int | float) or isinstance(x, bool) or math.isnan(x) or x <= 0:
        raise _bad(f"{what} must be a positive number (bytes per second or a ratio), not {x!r}")
    return float(x)


@dataclass(frozen=True)
class CodecProfile:
    """One codec as measured on this machine.

    size_ratio: raw bytes / bytes on the wire. encode_bps / decode_bps: raw bytes per second the
    sender codes and the receiver decodes (math.inf: free). agreement_pct: a lossy codec's
    measured top-1 agreement (None: unknown, so it passes no numeric floor)."""

    name: str
    size_ratio: float
    encode_bps: float
    decode_bps: float
    lossless: bool
    agreement_pct: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise _bad("a codec profile needs a name")
        _rate(self.size_ratio, f"{self.name}: size_ratio")
        _rate(self.encode_bps, f"{self.name}: encode_bps")
        _rate(self.decode_bps, f"{self.name}: decode_bps")
        if self.agreement_pct is not None and not 0 <= self.agreement_pct <= 100:
            raise _bad(f"{self.name}: agreement_pct must be in [0, 100]")
        if self.name == RAW and (self.size_ratio != 1 or not self.lossless):
            raise _bad("the raw profile is lossless with size_ratio 1")


def measured_profile(name: str, raw_bytes: int, seconds: Sequence[float], *, size_ratio: float,
                     lossless: bool, agreement_pct: float | None = None) -> CodecProfile:
    """A codec's profile from whole handoffs timed on this machine, so the choice follows
    whatever the codec costs today (a faster quantizer or compressor shows up at the next
    measurement; nothing is hard-coded): `seconds` are repeated runs of the complete CPU path
    (export, code, transport, decode, import) of `raw_bytes` over an unlimited link, and
    `size_ratio` is raw bytes / wire bytes of that codec.

    The median run sets the rate: the fastest run would bet on the luckiest moment of a shared
    machine and the mean on its worst stall. The whole path is charged to encode_bps (decode_bps
    free): where the stages share a few cores, that time is what the CPU side of one handoff
    costs, and predict_seconds sets it against the link's time for the wire bytes."""
    if not isinstance(raw_bytes, int) or isinstance(raw_bytes, bool) or raw_bytes <= 0:
        raise _bad(f"{name}: raw_bytes must be an int > 0, not {raw_bytes!r}")
    runs = [_rate(s, f"{name}: seconds") for s in seconds]
    if not runs:
        raise _bad(f"{name}: no timed runs")
    return CodecProfile(name, size_ratio, raw_bytes / statistics.median(runs), math.inf,
                        lossless, agreement_pct)


def _floor(floor: str | float) -> float | None:
    """None for "lossless", else the agreement floor in percent."""
    if floor == LOSSLESS:
        return None
    if isinstance(floor, str | bool) or not isinstance(floor, int | float):
        raise _bad(f"floor must be 'lossless' or a top-1 agreement in percent, not {floor!r}")
    if not 0 <= floor <= 100:
        raise _bad(f"agreement floor {floor} is not in [0, 100]")
    return float(floor)


def admits(profile: CodecProfile, floor: str | float = LOSSLESS) -> bool:
    """Does the fidelity floor allow this codec?"""
    f = _floor(floor)
    if profile.lossless:
        return True
    return f is not None and profile.agreement_pct is not None and profile.agreement_pct >= f


def predict_seconds(profile: CodecProfile, raw_bytes: int, link_bps: float,
                    pieces: int = 1, *, transport_bps: float = math.inf,
                    cores: float = math.inf) -> float:
    """Predicted end-to-end seconds of a `raw_bytes` payload in `pieces` pipelined pieces over a
    link of `link_bps` bytes per second (math.inf: no link limit), the transport moving at most
    `transport_bps` per CPU and all stages sharing `cores` CPUs (see the module docstring)."""
    if not isinstance(raw_bytes, int) or raw_bytes < 0:
        raise _bad(f"raw_bytes must be an int >= 0, not {raw_bytes!r}")
    if not isinstance(pieces, int) or pieces < 1:
        raise _bad(f"pieces must be an int >= 1, not {pieces!r}")
    link = _rate(link_bps, "link_bps")
    transport = _rate(transport_bps, "transport_bps")
    n_cores = _rate(cores, "cores")
    wire = raw_bytes / profile.size_ratio
    stages = (raw_bytes / profile.encode_bps, wire / link, raw_bytes / profile.decode_bps)
    cpu = stages[0] + stages[2] + wire / transport
    slow = max(stages)
    return max(slow, cpu / n_cores) + (sum(stages) - slow) / pieces


def choose_codec(link_bps: float, profiles: Sequence[CodecProfile], *,
                 floor: str | float = LOSSLESS, raw_bytes: int = 1 << 30,
                 pieces: int = 64, transport_bps: float = math.inf,
                 cores: float = math.inf) -> CodecProfile:
    """The admitted profile with the smallest predicted time (ties: the earlier in `profiles`).

    `profiles` must include RAW ("raw", lossless, size_ratio 1): it is the fallback that keeps
    the choice from ever being predicted slower than sending the bytes as they are."""
    if not profiles:
        raise _bad("no codec profiles")
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise _bad("codec profile names must be unique")
    if RAW not in names:
        raise _bad("the profiles must include 'raw' (the choice is never worse than raw)")
    admitted = [p for p in profiles if admits(p, floor)]
    times = [predict_seconds(p, raw_bytes, link_bps, pieces, transport_bps=transport_bps,
                             cores=cores) for p in admitted]
    return admitted[times.index(min(times))]
