"""Hostile inputs for the resource-bound tests: tiny messages that declare huge sizes.

Built with the conformance suite's raw writer (avp_conform.wire), never with the codec under
test, so each input carries exactly the lie it is named after with every checksum correct.
Run as a script, it decodes every case in this one process and prints the growth of the
process's peak RSS (ru_maxrss, which sees native allocations such as zstd's) as JSON lines;
test_resource_bounds.py runs it in a subprocess.
"""

from __future__ import annotations

import json
import resource
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass

from avp_conform import gen_common as g
from avp_conform.wire import WEntry, WLayer, WMessage, WTensor, build, section

import avp_codec as avp

E = avp.ErrorCode
PREAMBLE = b"\x89AVP\r\n\x1a\n" + struct.pack("<HHI", 1, 0, 0)
U64 = (1 << 64) - 1


@dataclass
class Case:
    name: str
    make: Callable[[], bytes]  # built lazily, so building one case never inflates another's RSS
    expect: avp.ErrorCode | str  # an error code, "ok" or "need_data"
    incremental: bool = False  # feed to avp.Decoder instead of avp.decode
    limits: avp.Limits | None = None
    declared: int = 0  # the size the input claims (bytes), for the report


def _head(stype: int, length: int, flags: int = 0) -> bytes:
    return PREAMBLE + struct.pack("<IIQ", stype, flags, length)


def _kv(tensors: list[WTensor], tokens: int = 2, **over: object) -> WMessage:
    m = WMessage(
        1,
        [g.ent("MODEL_ID", g.MODEL_ID), g.ent("CONTEXT_LENGTH", tokens)],
        [WLayer(0, 1, 0, tokens)],
        tensors,
    )
    for k, v in over.items():
        setattr(m, k, v)
    return m


def _key(shape: tuple[int, ...] = (1, 1, 2, 4), data: bytes = b"", **over: object) -> WTensor:
    t = WTensor(role=1, dtype=2, shape=shape, data=data, layer=0, layout=1)
    for k, v in over.items():
        setattr(t, k, v)
    return t


def rle_frame(total: int, *, content_size: int | None = None) -> bytes:
    """A zstd frame of RLE blocks (4 bytes each) that inflates to ``total`` bytes of 0x07.
    Window 128 KiB (the largest block); Frame_Content_Size only when given (8-byte field)."""
    if content_size is None:
        head = bytes([0x00, 7 << 3])  # FHD: no FCS, not single-segment; window log 17
    else:
        head = bytes([0xC0, 7 << 3]) + struct.pack("<Q", content_size)
    out = bytearray(b"\x28\xb5\x2f\xfd" + head)
    block = 128 << 10
    left = total
    while left:
        n = min(block, left)
        left -= n
        h = (1 if not left else 0) | (1 << 1) | (n << 3)
        out += struct.pack("<I", h)[:3] + b"\x07"
    return bytes(out)


def _bomb(total: int, content_size: int | None = None) -> bytes:
    frame = rle_frame(total, content_size=content_size)
    return build(_kv([_key((1, 1, 2, 1024), frame, codec=1)])).data


def cases() -> list[Case]:
    gib = 1 << 30
    big_lim = avp.Limits(max_tensor_bytes=1 << 62)
    text_entries = [g.ent("TEXT", "x")]
    return [
        Case("header length 2^62", lambda: _head(1, 1 << 62), E.LIMIT_HEADER, declared=1 << 62),
        Case("section length 2^64-1", lambda: _head(1, U64), E.LENGTH_OVERFLOW, declared=U64),
        Case(
            "unknown skippable section 2^40",
            lambda: _head(0x8001, 1 << 40, 1),
            E.LIMIT_HEADER,
            declared=1 << 40,
        ),
        Case("INDEX length 2^40", lambda: _index_head(1 << 40), E.LIMIT_TENSORS, declared=1 << 40),
        Case(
            "entry_count 2^32-1",
            lambda: build(WMessage(3, text_entries, entry_count=2**32 - 1)).data,
            E.LIMIT_ENTRIES,
            declared=2**32 - 1,
        ),
        Case(
            "entry_count at limit, no entries",
            lambda: build(WMessage(3, [], entry_count=4096)).data,
            E.HEADER_LAYOUT,
            declared=4096,
        ),
        Case(
            "layer_count 2^32-1",
            lambda: build(_kv([], layer_count=2**32 - 1)).data,
            E.LIMIT_LAYERS,
            declared=2**32 - 1,
        ),
        Case(
            "layer_count at limit, no layers",
            lambda: build(_kv([], layer_count=65536)).data,
            E.HEADER_LAYOUT,
            declared=65536,
        ),
        Case(
            "tensor_count 2^32-1",
            lambda: build(_kv([], tensor_count=2**32 - 1)).data,
            E.LIMIT_TENSORS,
            declared=2**32 - 1,
        ),
        Case(
            "tensor_count at limit, none sent",
            lambda: build(_kv([], tensor_count=1 << 20)).data[:-48],
            E.TRUNCATED,
            declared=1 << 20,
        ),
        Case(
            "rank 255",
            lambda: build(_kv([_key((1,) * 255, b"\0\0")])).data,
            E.LIMIT_RANK,
            declared=255,
        ),
        Case(
            "raw_length 2^64-1",
            lambda: build(_kv([_key(data=b"\0" * 16, raw_len=U64)])).data,
            E.LIMIT_TENSOR,
            declared=U64,
        ),
        Case(
            "stored_length 2^34, data absent",
            lambda: build(_kv([_key((1, 1, 2, 1 << 32), b"", stored_len=1 << 34)])).data,
            E.TRUNCATED,
            limits=avp.Limits(max_tensor_bytes=1 << 34),
            declared=1 << 34,
        ),
        Case(
            "shape product overflows u64",
            lambda: build(_kv([_key((1 << 40, 1 << 40, 2, 4), b"", raw_len=16)])).data,
            E.LENGTH_OVERFLOW,
            limits=big_lim,
            declared=U64,
        ),
        Case(
            "zstd bomb 1 GiB, no content size",
            lambda: _bomb(gib),
            E.DECOMPRESSED_SIZE,
            declared=gib,
        ),
        Case(
            "zstd bomb 4 GiB, no content size",
            lambda: _bomb(4 * gib),
            E.DECOMPRESSED_SIZE,
            declared=4 * gib,
        ),
        Case(
            "zstd bomb, content size 2^40",
            lambda: _bomb(gib, content_size=1 << 40),
            E.DECOMPRESSED_SIZE,
            declared=1 << 40,
        ),
        Case(
            "4097 metadata entries",
            lambda: (
                build(
                    WMessage(3, [*text_entries, *(WEntry(0x8000 + i, 5, b"") for i in range(4096))])
                ).data
            ),
            E.LIMIT_ENTRIES,
            declared=4097,
        ),
        Case(
            "4096 repeated keys",
            lambda: (
                build(
                    WMessage(3, [*text_entries, *(WEntry(0x8000, 5, b"\1") for _ in range(4095))])
                ).data
            ),
            E.NON_CANONICAL,
            declared=4096,
        ),
        Case(
            "4095 x 1 KiB unknown entries (valid)",
            lambda: (
                build(
                    WMessage(
                        3,
                        [
                            *text_entries,
                            *(WEntry(0x8000 + i, 5, b"\xab" * 1024) for i in range(4095)),
                        ],
                    )
                ).data
            ),
            "ok",
            declared=4 << 20,
        ),
        # The incremental decoder, fed only the announcing bytes.
        Case(
            "Decoder: header length 2^40",
            lambda: _head(1, 1 << 40),
            E.LIMIT_HEADER,
            incremental=True,
            declared=1 << 40,
        ),
        Case(
            "Decoder: tensor stored_length 2^34",
            lambda: _stream_tensor(1 << 34),
            E.LIMIT_BUFFER,
            incremental=True,
            limits=avp.Limits(max_tensor_bytes=1 << 34),
            declared=1 << 34,
        ),
        Case(
            "Decoder: tensor above max_buffer_bytes",
            lambda: _stream_tensor(1 << 20),
            E.LIMIT_BUFFER,
            incremental=True,
            limits=avp.Limits(max_buffer_bytes=1 << 16),
            declared=1 << 20,
        ),
        Case(
            "Decoder: skippable section 15 MiB, head only",
            lambda: _head(0x8001, 15 << 20, 1),
            "need_data",
            incremental=True,
            declared=15 << 20,
        ),
    ]


def _index_head(length: int) -> bytes:
    b = build(WMessage(3, [g.ent("TEXT", "x")]))
    return b.data[: b.offsets["index"]] + struct.pack("<IIQ", 3, 0, length)


def _stream_tensor(stored: int) -> bytes:
    """Preamble, HEADER and one TENSOR descriptor announcing ``stored`` data bytes; no data."""
    elems = stored // 2
    m = _kv([_key((1, 1, 2, elems // 2), b"", stored_len=stored)])
    data = build(m).data
    sec_at = data.index(section(2, b"")[:4], 16 + 20)  # first TENSOR section
    (n,) = struct.unpack_from("<Q", data, sec_at + 8)
    end = sec_at + 20 + n + (-(20 + n) % 8)
    return data[:end]


def run(case: Case) -> avp.ErrorCode | str:
    """Decode one case; the error code, "ok" or "need_data"."""
    try:
        if case.incremental:
            dec = avp.Decoder(limits=case.limits)
            dec.feed(case.make())
            while True:
                ev = dec.next_event()
                if ev is avp.NEED_DATA:
                    return "need_data"
                if isinstance(ev, avp.EndEvent):
                    return "ok"
        avp.decode(case.make(), limits=case.limits)
        return "ok"
    except avp.AvpError as e:
        return e.code


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(paths: list[str]) -> None:
    """Decode the case files written by the test (name, flags and bytes), smallest first, and
    print the growth of the peak RSS each one caused."""
    run(Case("warm-up", lambda: build(_kv([_key(data=b"\0" * 16)])).data, "ok"))
    run(Case("warm-up zstd", lambda: _bomb(4096), "ok"))
    by_name = {c.name: c for c in cases()}
    start = rss_kib()
    for path in paths:
        with open(path, "rb") as f:
            name = f.readline().decode().strip()
            data = f.read()
        case = by_name[name]
        case.make = lambda data=data: data
        before = rss_kib()
        got = run(case)
        print(
            json.dumps(
                {
                    "name": name,
                    "result": got if isinstance(got, str) else got.name,
                    "input_bytes": len(data),
                    "rss_growth_kib": rss_kib() - before,
                    "rss_above_start_kib": rss_kib() - start,
                }
            )
        )
    sys.stdout.flush()


def report(path: str) -> None:
    """Write the measurements as a markdown table (benchmarks/results/hardening_*)."""
    import tracemalloc

    run(Case("warm-up", lambda: build(_kv([_key(data=b"\0" * 16)])).data, "ok"))
    run(Case("warm-up zstd", lambda: _bomb(4096), "ok"))
    rows = []
    for case in sorted(cases(), key=lambda c: len(c.make())):
        data = case.make()
        case.make = lambda data=data: data
        rss0 = rss_kib()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        got = run(case)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        got_s = got if isinstance(got, str) else got.name
        rows.append(f"| {case.name} | {len(data):,} | {case.declared:,} | {got_s} | "
                    f"{peak / 1024:,.1f} | {rss_kib() - rss0:,} |")
    head = ["# Resource bounds under hostile input (hardening, issue 7)", "",
            "Generated by `python tests/hardening/_hostile.py --report "
            "benchmarks/results/hardening_resource_bounds.md`; asserted by "
            "tests/hardening/test_resource_bounds.py. Peak Python memory by tracemalloc while "
            "decoding; RSS growth by ru_maxrss (native allocations included; 0 means the "
            "process's peak did not rise). Default limits unless the test says otherwise.", "",
            "| input | input bytes | declared size / count | result | peak Python KiB | "
            "RSS growth KiB |", "|---|---|---|---|---|---|"]
    with open(path, "w") as f:
        f.write("\n".join(head + rows) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--report"]:
        report(sys.argv[2])
    else:
        main(sys.argv[1:])
