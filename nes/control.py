"""The control channel from the writer sidecar back to the trader.

Contract: one AF_UNIX stream socketpair per writer. The writer sends `Ready` once (after the run
is open), then `AnchorAck` / `CloseAck` in the order the requests were taken from the ring, and
at most one `Halt`. End-of-file is meaningful both ways: the trader seeing EOF without a halt
or a close ack means the writer died; the writer seeing EOF means the trader is gone (drain,
commit what was pushed, exit, leave the run Running). Messages are msgspec MessagePack, each
prefixed by its u32 LE length and bounded by `MAX_MESSAGE_BYTES`. No pickle.
"""

from __future__ import annotations

import socket
import struct

import msgspec

from nes.halt import HaltReason
from nes.snapshot import SnapshotAnchor

__all__ = [
    "Ready",
    "Halt",
    "AnchorAck",
    "CloseAck",
    "ControlMessage",
    "ControlChannel",
    "ControlProtocolError",
    "MAX_MESSAGE_BYTES",
]

MAX_MESSAGE_BYTES = 1 << 20
_LEN = struct.Struct("<I")


class Ready(msgspec.Struct, frozen=True, tag=True):
    high_watermark: int
    pid: int


class Halt(msgspec.Struct, frozen=True, tag=True):
    reason: HaltReason


class AnchorAck(msgspec.Struct, frozen=True, tag=True):
    anchor: SnapshotAnchor | None = None
    error: str | None = None


class CloseAck(msgspec.Struct, frozen=True, tag=True):
    high_watermark: int | None = None
    error: str | None = None


ControlMessage = Ready | Halt | AnchorAck | CloseAck


class ControlProtocolError(Exception):
    """The peer sent bytes that are not a control message."""


class ControlChannel:
    """One end of the control socketpair. Owns the socket; `close()` releases it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(ControlMessage)

    @classmethod
    def from_fd(cls, fd: int) -> ControlChannel:
        return cls(socket.socket(fileno=fd))

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, message: ControlMessage) -> None:
        body = self._encoder.encode(message)
        self._sock.sendall(_LEN.pack(len(body)) + body)

    def recv(self) -> ControlMessage | None:
        """The next message, blocking; None at end-of-file."""
        while True:
            if len(self._buf) >= 4:
                (n,) = _LEN.unpack_from(self._buf, 0)
                if n > MAX_MESSAGE_BYTES:
                    raise ControlProtocolError(f"control message of {n} bytes exceeds {MAX_MESSAGE_BYTES}")
                if len(self._buf) >= 4 + n:
                    body = bytes(self._buf[4 : 4 + n])
                    del self._buf[: 4 + n]
                    try:
                        return self._decoder.decode(body)
                    except msgspec.DecodeError as exc:
                        raise ControlProtocolError(f"undecodable control message: {exc}") from None
            chunk = self._sock.recv(65536)
            if not chunk:
                if self._buf:
                    raise ControlProtocolError(f"{len(self._buf)} bytes of a partial message before EOF")
                return None
            self._buf += chunk

    def shutdown_write(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer is already gone

    def close(self) -> None:
        self._sock.close()
