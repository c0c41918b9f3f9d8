"""Length-prefixed AVP frames over a stream socket.

A frame is ``u64 little-endian length`` then that many bytes: one whole AVP message. The AVP
message already identifies and checks itself (magic, CRCs, trailer), so the frame adds only the
length a receiver needs to know where the message ends on a stream. The length is checked against
the receiver's limit *before* anything is allocated, every read has a timeout, and a peer that
closes mid-frame is TRUNCATED, so a stuck or hostile peer can cost neither memory nor a hang.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time

import avp_codec as avp

from ._errors import fail

_LEN = struct.Struct("<Q")
DEFAULT_TIMEOUT = 120.0


class FramedSocket:
    """One connection. Not thread-safe; one reader and one writer at a time."""

    def __init__(self, sock: socket.socket, *, max_frame: int, timeout: float = DEFAULT_TIMEOUT):
        self.sock = sock
        self.max_frame = max_frame
        self.sock.settimeout(timeout)
        self.bytes_sent = 0
        self.bytes_received = 0

    @classmethod
    def connect(cls, host: str, port: int, *, max_frame: int,
                timeout: float = DEFAULT_TIMEOUT, retry_for: float = 0.0) -> FramedSocket:
        """Connect, retrying refused connections for up to `retry_for` seconds (peer starting)."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                sock = socket.create_connection((host, port), timeout=timeout)
                return cls(sock, max_frame=max_frame, timeout=timeout)
            except ConnectionRefusedError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def send(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self.sock.sendall(_LEN.pack(len(view)))
        self.sock.sendall(view)
        self.bytes_sent += _LEN.size + len(view)

    def finish_sending(self) -> None:
        """Half-close: tell the peer no more frames follow (it sees EOF), keep reading."""
        self.sock.shutdown(socket.SHUT_WR)

    def recv(self) -> bytearray:
        head = self._read_exact(_LEN.size, allow_eof=True)
        (n,) = _LEN.unpack(head)
        if n > self.max_frame:
            # Refuse before allocating: the declared length alone cannot cost us memory.
            fail(avp.ErrorCode.LIMIT_MESSAGE,
                 f"peer announced a {n}-byte frame, our limit is {self.max_frame}", path="frame")
        body = self._read_exact(n, allow_eof=False)
        self.bytes_received += _LEN.size + n
        return body

    def _read_exact(self, n: int, *, allow_eof: bool) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:], min(n - got, 1 << 22))
            if k == 0:
                if got == 0 and allow_eof:
                    raise EOFError("peer closed the connection")
                fail(avp.ErrorCode.TRUNCATED,
                     f"connection closed after {got} of {n} bytes", path="frame")
            got += k
        return buf

    def send_message(self, msg: avp.Message) -> int:
        data = avp.encode(msg)
        self.send(data)
        return len(data)

    def recv_message(self, *, limits: avp.Limits | None = None) -> tuple[avp.Message, int]:
        data = self.recv()
        return avp.decode(data, limits=limits), len(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the peer may have gone already
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def listen(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket on localhost (port 0 = the OS picks one; read it from getsockname)."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(4)
    return srv
