"""A 6 GB message (a sparse file: the data blocks are holes) summarises without reading its tensor
data.  Every data_crc is deliberately wrong: the header-only views still call the structure valid,
which they could not if they read a single data byte, while --verify-style checks would fail.
(How fast that is, is measured by tools/benchmarks/bench_dump_bigfile.py, not asserted here.)"""

from __future__ import annotations

import struct
from pathlib import Path

import crc32c
from avp_tools import walk
from avp_tools.dump_cli import main
from click.testing import CliRunner

MAGIC = b"\x89AVP\r\n\x1a\n"
NO_REF = 0xFFFFFFFF


def _section(typ: int, body: bytes) -> bytes:
    head = struct.pack("<IIQ", typ, 0, len(body)) + body
    out = head + struct.pack("<I", crc32c.crc32c(head))
    return out + b"\0" * (-len(out) % 8)


def write_sparse_kv(path: Path, layers: int, tokens: int) -> int:
    """KV_CACHE with float16 K/V [1, 8, tokens, 128] per layer; data left as holes."""
    shape = (1, 8, tokens, 128)
    nbytes = 2 * 8 * tokens * 128
    entries = (struct.pack("<HBBI", 1, 1, 5, 32) + bytes(32)
               + struct.pack("<HBBI", 5, 1, 1, 8) + struct.pack("<Q", tokens))
    table = b"".join(struct.pack("<IB3xI4xQQ", i, 1, 0, 0, tokens) for i in range(layers))
    header = struct.pack("<HHIII", 1, 0, 2, layers, 2 * layers) + entries + table
    index = []
    with open(path, "wb") as fh:
        fh.write(MAGIC + struct.pack("<HHI", 1, 0, 0) + _section(1, header))
        for i in range(2 * layers):
            sec = fh.tell()
            desc = struct.pack("<IIHBBBBBBIIIB3xQQQI4x", i, i // 2, 1 + i % 2, 2, 0, 4, 1, 0, 0,
                               0, NO_REF, NO_REF, 0, 0, nbytes, nbytes, 0xDEADBEEF)
            desc += b"".join(struct.pack("<Q", d) for d in shape)
            fh.write(_section(2, desc))
            data = fh.tell() + (-fh.tell() % 64)
            fh.seek(data + nbytes)  # a hole: never written, reads as zeros
            index.append((sec, data, nbytes))
        at = fh.tell()
        body = struct.pack("<Q", len(index)) + b"".join(struct.pack("<QQQ", *e) for e in index)
        fh.write(_section(3, body) + struct.pack("<Q", at) + b"\x89AVPEND\n")
        return fh.tell()


def test_six_gigabytes_summarise_from_the_index_alone(tmp_path: Path) -> None:
    path = tmp_path / "big.avp"
    size = write_sparse_kv(path, layers=2, tokens=768 * 1024)  # 1.5 GiB a tensor
    assert size > 6 * 2**30
    r = CliRunner().invoke(main, [str(path)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert f"({size:,} bytes)" in r.output
    assert "structure valid" in r.output
    assert f"{4 * 1536 * 2**20:,}" in r.output  # total stored bytes
    r = CliRunner().invoke(main, [str(path), "--explain", str(size // 2)],
                           catch_exceptions=False)
    assert "tensor[" in r.output and "].data" in r.output
    m = CliRunner().invoke(main, [str(path), "--map"], catch_exceptions=False)
    assert m.exit_code == 0 and f"total {size:,} of {size:,}" in m.output


def test_checking_one_tensor_would_notice(tmp_path: Path) -> None:
    # The same construction, small: the wrong CRCs are caught as soon as data is read.
    path = tmp_path / "small.avp"
    write_sparse_kv(path, layers=1, tokens=4)
    data = path.read_bytes()
    assert walk(data).valid
    assert [i.name for i in walk(data, verify_data=True).issues] == ["DATA_CHECKSUM"] * 2
