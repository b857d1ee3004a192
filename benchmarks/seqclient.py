"""A sequential HTTP/1.1 client for the gateway benchmark: one keep-alive socket, one request at a time, timed.

wrk measures only whole responses; the benchmark also wants the streamed answer's first token. This client sends
the request bytes itself and reads the raw response (Content-Length or chunked), noting when the first piece of
the answer arrives and when the response ends. It adds the same few microseconds to every target, so subtracting
the stub's figures leaves a gateway's own overhead. Blocking sockets: no event loop between the wire and the clock.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Timing:
    first_token_ms: float  # when the response first contained the answer's first piece (== total if never)
    total_ms: float
    status: int


class SequentialClient:
    def __init__(self, url: str, body: dict[str, object], headers: dict[str, str], first_piece: str) -> None:
        parts = urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        payload = json.dumps(body, separators=(",", ":")).encode()
        lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(payload)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
        self._marker = first_piece.encode()
        self._sock: socket.socket | None = None
        self._buffer = b""

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection(self._address, timeout=60)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._buffer = b""
        return self._sock

    def request(self) -> Timing:
        sock = self._connect()
        started = time.perf_counter()
        sock.sendall(self._request)
        first: float | None = None
        head = self._read_until(b"\r\n\r\n")
        status_line, _, header_block = head.partition(b"\r\n")
        status = int(status_line.split()[1])
        headers = {}
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        body = bytearray()
        if headers.get(b"transfer-encoding") == b"chunked":
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                chunk = self._read_exactly(size + 2)[:-2]
                if size == 0:
                    break
                body += chunk
                if first is None and self._marker in body:
                    first = time.perf_counter()
        else:
            remaining = int(headers.get(b"content-length", b"0"))
            while remaining:
                if not self._buffer:
                    self._fill()
                taken, self._buffer = self._buffer[:remaining], self._buffer[remaining:]
                remaining -= len(taken)
                body += taken
                if first is None and self._marker in body:
                    first = time.perf_counter()
        ended = time.perf_counter()
        if headers.get(b"connection") == b"close":
            self.close()
        return Timing(((first or ended) - started) * 1000, (ended - started) * 1000, status)

    def _fill(self) -> None:
        assert self._sock is not None
        data = self._sock.recv(65536)
        if not data:
            self.close()
            raise ConnectionError("the server closed the connection")
        self._buffer += data

    def _read_until(self, separator: bytes) -> bytes:
        while (index := self._buffer.find(separator)) < 0:
            self._fill()
        found, self._buffer = self._buffer[:index], self._buffer[index + len(separator) :]
        return found

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        found, self._buffer = self._buffer[:size], self._buffer[size:]
        return found
