"""A loopback TCP proxy a test can cut and heal: the network between a simulated phone and a live server.

``cut()`` drops every open connection and refuses new ones (they are accepted and closed at once, like a dead
network path); ``heal()`` lets connections through again. ``cut_after(n)`` lets ``n`` more bytes flow from the
server to the client, then cuts: a download broken off part way, or an answer lost after the server acted.
"""

from __future__ import annotations

import contextlib
import socket
import threading

BUFFER = 1 << 16


class TcpProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._down = False
        self._budget: int | None = None
        self._closing = False
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        with self._lock:
            self._down = True
            self._budget = None
            sockets, self._open = self._open, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def heal(self) -> None:
        with self._lock:
            self._down = False
            self._budget = None

    def cut_after(self, server_bytes: int) -> None:
        with self._lock:
            self._budget = server_bytes

    def close(self) -> None:
        self._closing = True
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                down = self._down
            if down:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, server}
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_server: bool) -> None:
        try:
            while data := source.recv(BUFFER):
                if from_server:
                    with self._lock:
                        budget = self._budget
                        if budget is not None:
                            data = data[:budget]
                            self._budget = budget - len(data)
                    if data:
                        target.sendall(data)
                    if budget is not None and self._budget == 0:
                        self.cut()
                        return
                else:
                    target.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= {source, target}
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
