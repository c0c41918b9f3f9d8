"""What a body costs the server before it is refused or stored (issue 14 at the binding):
stored messages are verified without keeping their tensors' decompressed bytes (R-H4.3), and a
receiver's checks of a tensor's descriptor run before its data is received, checked or
decompressed (R-H2.14). A real ``avp-serve`` process whose memory is watched from outside.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import zstandard
from conftest import Served
from httpkit import AVP, handshake, kv, problem, zstd_bomb
from receivers import MODEL_ID

import avp_codec as avp

pytestmark = pytest.mark.timeout(180)
E = avp.ErrorCode
MB = 1024  # the server's memory is read in KiB


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(["--app", "receivers:picky", "--max-decoded-bytes", str(300 << 20)],
               log=tmp_path_factory.mktemp("bounded") / "serve.log")
    try:
        yield s
    finally:
        s.stop()


def _kv_with(stored: bytes, raw_length: int, *, heads: int = 2) -> bytes:
    """A KV_CACHE whose KEY and VALUE are zstd frames ``stored`` declaring ``raw_length``."""
    tokens = raw_length // (heads * 64 * 2)
    shape = (1, heads, tokens, 64)
    ts = [avp.Tensor(role, avp.Dtype.FLOAT16, shape, stored, layer=0, codec=avp.Codec.ZSTD,
                     layout=avp.Layout.BHTD, raw_length=raw_length)
          for role in (avp.Role.KEY, avp.Role.VALUE)]
    msg = avp.Message(avp.Kind.KV_CACHE, [avp.Entry.of(avp.MetaKey.MODEL_ID, MODEL_ID),
                                          avp.Entry.of(avp.MetaKey.CONTEXT_LENGTH, tokens)],
                      [avp.Layer(0, avp.LayerKind.FULL_ATTENTION, 0, tokens)], ts)
    return avp.encode(msg)


def _rle_frame_without_size(n: int) -> bytes:
    """A frame of RLE blocks inflating to ``n`` zero bytes, no Frame_Content_Size (the decoder
    learns the length only by inflating), window 128 KiB."""
    out = bytearray(b"\x28\xb5\x2f\xfd" + bytes([0x00, 7 << 3]))
    left = n
    while left:
        size = min(128 << 10, left)
        left -= size
        out += struct.pack("<I", (1 if not left else 0) | (1 << 1) | (size << 3))[:3] + b"\0"
    return bytes(out)


def _post(http: httpx.Client, url: str, body: bytes, token: str | None = None
          ) -> httpx.Response:
    headers = {"content-type": AVP}
    if token is not None:
        headers["avp-session"] = token
    return http.post(url, content=body, headers=headers)


def test_storing_a_zstd_bomb_keeps_none_of_its_output(srv: Served) -> None:
    """R-H4.3, R-H2.11: POST messages of two zstd tensors of 200 MiB each (a few KiB on the
    wire) verifies every frame by streaming it through a bounded scratch buffer: the message is
    stored as received while the server's memory grows by far less than one tensor."""
    body = zstd_bomb(200 << 20)
    with httpx.Client(timeout=60, trust_env=False) as http:
        srv.reset_hwm()
        before = srv.rss_kb()
        r = _post(http, srv.url + "/messages", body)
        assert r.status_code in (200, 201), r.text
        assert srv.hwm_kb() - before < 32 * MB, srv.hwm_kb() - before
        got = http.get(srv.url + "/" + r.headers["location"].split("/v1/", 1)[1])
        assert got.status_code == 200 and got.content == body


def test_stored_frames_get_the_codes_a_delivery_gets(srv: Served) -> None:
    """R-H2.11 with R-H4.3: a frame that inflates to less than its tensor's raw_length is
    DECOMPRESSED_SIZE whether the server keeps the output (deliver) or not (messages); a frame
    whose window needs more than 8 MiB is refused by the store (DECOMPRESSION_FAILED, which
    R-7.13 allows) and accepted by a delivery that keeps its output."""
    n = 4 << 20
    short = _kv_with(_rle_frame_without_size(n - (128 << 10)), n)
    params = zstandard.ZstdCompressionParameters(window_log=24, write_content_size=True)
    wide_raw = 32 << 20
    wide = _kv_with(zstandard.ZstdCompressor(compression_params=params).compress(
        np.arange(wide_raw // 2, dtype=np.uint16).tobytes()), wide_raw)
    with httpx.Client(timeout=60, trust_env=False) as http:
        token = handshake(srv.url, http)
        for url, tok in ((srv.url + "/messages", None), (srv.url + "/deliver", token)):
            r = _post(http, url, short, tok)
            assert (r.status_code, problem(r)["code"]) == (400, E.DECOMPRESSED_SIZE), url
        r = _post(http, srv.url + "/messages", wide)
        assert (r.status_code, problem(r)["code"]) == (400, E.DECOMPRESSION_FAILED)
        assert "window" in problem(r)["detail"]
        r = _post(http, srv.url + "/deliver", wide, token)
        assert r.status_code == 200, r.text


def test_descriptor_checks_run_before_the_data(srv: Served) -> None:
    """R-H2.14: the receiver's check of a tensor's descriptor refuses it before its data is
    checked or inflated. A KEY of 3 heads whose data CRC is wrong is MODEL_MISMATCH (422), not
    DATA_CHECKSUM; a zstd bomb of 2^18 heads is refused without inflating (the server's
    memory hardly moves); neither reached the receiver's ``on_tensor``."""
    msg = kv(tokens=4, layers=1)
    bad = msg.tensors[0]
    k3 = np.zeros((1, 3, 4, 16), np.float16)
    msg.tensors[0] = avp.Tensor.from_array(k3, avp.Role.KEY, ordinal=0, layout=bad.layout)
    data = bytearray(avp.encode(msg))
    reader = avp.IndexedReader(bytes(data))
    data[reader.index[0][1]] ^= 0xFF  # the first byte of the KEY's data: its CRC fails
    valid = avp.encode(kv(tokens=4, layers=1))
    with httpx.Client(timeout=60, trust_env=False) as http:
        token = handshake(srv.url, http)
        r = _post(http, srv.url + "/deliver", valid, token)
        assert r.status_code == 200, r.text
        seen = r.json()["seen"]
        r = _post(http, srv.url + "/deliver", bytes(data), token)
        assert (r.status_code, problem(r)["code"]) == (422, E.MODEL_MISMATCH)
        assert problem(r)["path"] == "tensor[0]"
        srv.reset_hwm()
        before = srv.rss_kb()
        r = _post(http, srv.url + "/deliver", _kv_with(_rle_frame_without_size(128 << 20),
                                                       128 << 20, heads=1 << 18), token)
        assert (r.status_code, problem(r)["code"]) == (422, E.MODEL_MISMATCH)
        assert srv.hwm_kb() - before < 16 * MB, srv.hwm_kb() - before
        r = _post(http, srv.url + "/deliver", valid, token)
        assert r.status_code == 200, r.text
        assert r.json()["seen"] == seen + 2  # only the KEY and VALUE of the valid delivery
