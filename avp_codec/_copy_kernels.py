"""A compiled copy with CRC32C in one pass, for the encoder's tensor data (issue 18.1).

Why it exists: copying a tensor of a few MiB with ``np.copyto`` (glibc's memcpy below its
non-temporal threshold) goes through the cache: every destination line is read before it is
written (read for ownership) and evicts useful lines, and the CRC32C is a second pass over the
source. memcpy of one large buffer streams with non-temporal stores instead, and that is the
baseline the encoder is measured against. This kernel reads each 8-byte word of the source
from memory once: per block of about 16 KiB it runs the SSE4.2 ``crc32`` instruction over the
block as three independent streams (the instruction's latency is three cycles, its throughput
one), and copies the block, then in L1, with 64-byte non-temporal stores in address order while
the next block's CRC runs (the destination is first brought to a 64-byte boundary byte by byte;
8-byte non-temporal stores measured a third slower). The three stream CRCs are joined per
block by a linear map: appending ``n`` zero bytes multiplies the raw CRC by x^(8n) mod P, a
32x32 bit matrix applied as four 256-entry tables.

The first use in a process imports numba and loads (or, the first time on a machine,
compiles) the kernel: about 1-3 s measured on the loaded 2-core development machine, paid once
by the first ``encode_into`` of a tensor of ``MIN_BYTES`` or more. A one-shot process that
cares more about that latency than about copy speed sets ``AVP_KERNELS=numpy``.

It only makes things faster. ``_parallel.copy_crc`` keeps the numpy twin (``np.copyto`` plus
the ``crc32c`` package), which gives the same bytes and the same CRC; the kernel is used on
x86-64 CPUs with SSE4.2 when numba is installed and ``AVP_KERNELS`` allows it (``_jit``).
"""

from __future__ import annotations

import threading
from typing import Any

import crc32c
import numpy as np

from . import _jit

BLOCK = 5440  # bytes per CRC stream: three of them (16 KiB) fit L1; 85 lines, not a 4 KiB multiple
MIN_BYTES = 1 << 20  # below this, non-temporal stores and the call cost more than they save

# Filled in by _intrinsics() when the kernel is compiled (numba is imported lazily).
_load: Any = None
_copy64_nt: Any = None
_crc64: Any = None
_crc8: Any = None
_sfence: Any = None

_lock = threading.Lock()
_ready: bool | None = None  # None: not tried yet
_fn: Any = None  # the wrapped compiled kernel, once built


def _raw(c: int, data: bytes) -> int:
    """The CRC register after ``data`` from register ``c`` (no pre/post inversion)."""
    return crc32c.crc32c(data, c ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def shift_table(n: int) -> np.ndarray:
    """uint32[4, 256]: the map c -> raw CRC register after n zero bytes from register c, as
    four byte tables (the map is linear over GF(2), so c's bytes contribute independently)."""
    zeros = bytes(n)
    basis = [_raw(1 << k, zeros) for k in range(32)]
    out = np.zeros((4, 256), np.uint32)
    for j in range(4):
        for b in range(256):
            v = 0
            for bit in range(8):
                if b >> bit & 1:
                    v ^= basis[8 * j + bit]
            out[j, b] = v
    return out


def _copy_crc(dst: Any, src: Any, crc: Any, table: Any) -> Any:
    """Copy src into dst (uint8 arrays of equal length) and return the CRC32C of src continued
    from ``crc`` (the crc32c package's convention). Compiled by numba; see the module text."""
    n = src.size
    c = np.uint64(np.uint32(crc) ^ np.uint32(0xFFFFFFFF))
    i = 0
    head = min((-dst.ctypes.data) % 64, n)  # bytes until dst is 64-aligned (vector NT stores)
    while i < head:
        c = _crc8(c, src[i])
        dst[i] = src[i]
        i += 1
    step = 3 * BLOCK
    blocks = (n - i) // step
    if blocks:
        # Block j is copied while block j + 1's CRC runs, so reads from memory and
        # non-temporal writes overlap (in turns, they measured 30-40% slower). The CRC runs as
        # three streams over a block's thirds (the block then sits in L1 for its copy), 64
        # bytes of each per step, while three lines of the block before are stored: one
        # block's CRC steps match the other's lines exactly. Three store streams, one per
        # third, measured several times slower (write-combining buffers).
        c1 = np.uint64(0)
        c2 = np.uint64(0)
        for u in range(i, i + BLOCK, 8):  # block 0's CRC
            c = _crc64(c, _load(src, u))
            c1 = _crc64(c1, _load(src, u + BLOCK))
            c2 = _crc64(c2, _load(src, u + 2 * BLOCK))
        t = np.uint32(c)
        c = np.uint64(table[0, t & 255] ^ table[1, (t >> 8) & 255] ^ table[2, (t >> 16) & 255]
                      ^ table[3, t >> 24]) ^ c1
        t = np.uint32(c)
        c = np.uint64(table[0, t & 255] ^ table[1, (t >> 8) & 255] ^ table[2, (t >> 16) & 255]
                      ^ table[3, t >> 24]) ^ c2
        for j in range(blocks):
            cur = i + j * step
            if j + 1 < blocks:
                nxt = cur + step
                c1 = np.uint64(0)
                c2 = np.uint64(0)
                for q in range(0, BLOCK, 64):
                    for u in range(nxt + q, nxt + q + 64, 8):
                        c = _crc64(c, _load(src, u))
                        c1 = _crc64(c1, _load(src, u + BLOCK))
                        c2 = _crc64(c2, _load(src, u + 2 * BLOCK))
                    o = cur + 3 * q
                    _copy64_nt(dst, o, src, o)
                    _copy64_nt(dst, o + 64, src, o + 64)
                    _copy64_nt(dst, o + 128, src, o + 128)
                # Join the streams: shift by a third's length (the table), add the next.
                t = np.uint32(c)
                c = np.uint64(table[0, t & 255] ^ table[1, (t >> 8) & 255]
                              ^ table[2, (t >> 16) & 255] ^ table[3, t >> 24]) ^ c1
                t = np.uint32(c)
                c = np.uint64(table[0, t & 255] ^ table[1, (t >> 8) & 255]
                              ^ table[2, (t >> 16) & 255] ^ table[3, t >> 24]) ^ c2
            else:
                for o in range(cur, cur + step, 64):
                    _copy64_nt(dst, o, src, o)
        i += blocks * step
    while i + 64 <= n:
        for k in range(i, i + 64, 8):
            c = _crc64(c, _load(src, k))
        _copy64_nt(dst, i, src, i)
        i += 64
    _sfence()  # non-temporal stores are weakly ordered: make them visible before returning
    while i < n:
        c = _crc8(c, src[i])
        dst[i] = src[i]
        i += 1
    return np.uint32(c) ^ np.uint32(0xFFFFFFFF)


_KERNEL = _jit.kernel(_copy_crc)


def _intrinsics() -> bool:
    """Bind the kernel's primitives to LLVM intrinsics; False where the CPU lacks SSE4.2."""
    import importlib

    ll = importlib.import_module("llvmlite.binding")
    ir = importlib.import_module("llvmlite.ir")
    nb_ext = importlib.import_module("numba.extending")
    nb_types = importlib.import_module("numba.core.types")
    cgutils = importlib.import_module("numba.core.cgutils")
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        if not ll.get_host_cpu_features().get("sse4.2", False):
            return False
    except RuntimeError:  # features not known on this platform
        return False
    i64, i32 = ir.IntType(64), ir.IntType(32)

    def crc64_typer(typingctx: Any, c: Any, v: Any) -> Any:
        def gen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(i64, [i64, i64]), "llvm.x86.sse42.crc32.64.64")
            return builder.call(fn, list(args))
        return nb_types.uint64(nb_types.uint64, nb_types.uint64), gen

    def crc8_typer(typingctx: Any, c: Any, v: Any) -> Any:
        def gen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(i32, [i32, ir.IntType(8)]),
                "llvm.x86.sse42.crc32.32.8")
            r = builder.call(fn, [builder.trunc(args[0], i32), args[1]])
            return builder.zext(r, i64)
        return nb_types.uint64(nb_types.uint64, nb_types.uint8), gen

    def _ptr(context: Any, builder: Any, arrty: Any, arr: Any, i: Any) -> Any:
        a = context.make_array(arrty)(context, builder, arr)
        return builder.bitcast(builder.gep(a.data, [i]), i64.as_pointer())

    def load_typer(typingctx: Any, arr: Any, i: Any) -> Any:
        def gen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return builder.load(_ptr(context, builder, sig.args[0], args[0], args[1]), align=1)
        return nb_types.uint64(arr, nb_types.intp), gen

    def copy64_typer(typingctx: Any, dst: Any, i: Any, src: Any, j: Any) -> Any:
        # 64 bytes: an unaligned vector load, then a non-temporal store to dst + i, which the
        # kernel keeps 64-aligned (a non-temporal vector store must be aligned).
        def gen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            vec = ir.VectorType(i64, 8)
            d = context.make_array(sig.args[0])(context, builder, args[0])
            s = context.make_array(sig.args[2])(context, builder, args[2])
            sp = builder.bitcast(builder.gep(s.data, [args[3]]), vec.as_pointer())
            dp = builder.bitcast(builder.gep(d.data, [args[1]]), vec.as_pointer())
            st = builder.store(builder.load(sp, align=1), dp, align=64)
            st.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(i32, 1)]))
            return context.get_dummy_value()
        return nb_types.void(dst, nb_types.intp, src, nb_types.intp), gen

    def sfence_typer(typingctx: Any) -> Any:
        def gen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence")
            builder.call(fn, [])
            return context.get_dummy_value()
        return nb_types.void(), gen

    g = globals()
    g["_crc64"] = nb_ext.intrinsic(crc64_typer)
    g["_crc8"] = nb_ext.intrinsic(crc8_typer)
    g["_load"] = nb_ext.intrinsic(load_typer)
    g["_copy64_nt"] = nb_ext.intrinsic(copy64_typer)
    g["_sfence"] = nb_ext.intrinsic(sfence_typer)
    return True


def _self_test(fn: Any) -> bool:
    """Compile and check the kernel once on bytes that exercise every loop (blocks, words,
    tail) against the crc32c package; any failure leaves the numpy twin in charge."""
    raw = bytes(range(256)) * 200 + b"avp"
    want = crc32c.crc32c(raw, 0x12345678)
    # Read-only and writable sources are two specialisations: compile both now.
    for src in (np.frombuffer(raw, np.uint8), np.frombuffer(bytearray(raw), np.uint8)):
        dst = np.zeros(len(raw), np.uint8)
        try:
            got = int(fn(dst, src, np.uint32(0x12345678), shift_table(BLOCK)))
        except Exception:  # noqa: BLE001 - a platform numba cannot compile for
            return False
        if got != want or dst.tobytes() != raw:
            return False
    return True


def get() -> Any:
    """The compiled ``copy_crc(dst, src, crc)``, or None (no numba, ``AVP_KERNELS=numpy``, not
    an x86-64 CPU with SSE4.2). Compiled on the first call (numba caches it on disk)."""
    global _ready, _fn
    if not _jit.available():
        return None
    if _ready is None:
        with _lock:
            if _ready is None:
                try:
                    fn = _KERNEL.get() if _intrinsics() else None
                except Exception:  # noqa: BLE001 - numba present but unusable (no cache
                    fn = None      # locator, a broken llvmlite): the numpy twin serves
                if fn is not None and not _self_test(fn):
                    fn = None
                if fn is not None:
                    table = shift_table(BLOCK)

                    def copy_crc(dst: np.ndarray, src: np.ndarray, crc: int = 0) -> int:
                        return int(fn(dst, src, np.uint32(crc), table))

                    _fn = copy_crc
                _ready = fn is not None
    return _fn
