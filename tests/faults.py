"""A fault-injecting TCP proxy on 127.0.0.1, in front of a real server (moto, an SMTP server, a webhook receiver).

    with FaultProxy(("127.0.0.1", moto_port), ["pass", "lose_answer", "pass"]) as proxy:
        client = boto3.client(..., endpoint_url=proxy.url)

Each accepted connection gets the next behaviour from a sequence (the last one repeats), a callable
`(n) -> behaviour` (n counts from 0) or one behaviour for all:

- "pass": forwarded to the upstream, the answer back to the client.
- "refuse": connections are refused by the kernel (the proxy stops listening), so the client sees
  ECONNREFUSED and knows nothing was sent. A refused attempt leaves no trace the proxy could count,
  so a "refuse" slot lasts `refuse_for` seconds, then the next behaviour is taken.
- "hang": accepted, whatever arrives is read and dropped, nothing is ever answered.
- "lose_answer": the request goes fully to the upstream, the upstream's complete answer is read,
  then the client's connection is closed without it (HTTP only).
- "reset": the request is read (HTTP) and the connection reset, the upstream never sees it: from the
  client's side this cannot be told apart from "lose_answer".
- bytes: a canned HTTP answer (a throttling error, a 500...) sent instead of asking the upstream.

With `http=True` (the default) every exchange is one HTTP/1.1 request and its answer, and both sides are
told `Connection: close`: clients that keep connections alive (botocore, httpx) open one connection per
request, so a behaviour applies to exactly one request. With `http=False` bytes are piped as they come
(SMTP); "lose_answer", "reset" after a request and canned answers need HTTP.

The proxy is bounded: it stops by itself after `lifetime` seconds (closing every connection, a hanging
one too), every socket has a timeout, and leaving the `with` block stops it.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence

Behaviour = str | bytes
BEHAVIOURS = {"pass", "refuse", "hang", "lose_answer", "reset"}


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], behaviours: Behaviour | Sequence[Behaviour] | Callable[[int], Behaviour] = "pass",
                 *, http: bool = True, lifetime: float = 30.0, refuse_for: float = 1.0, io_timeout: float = 10.0) -> None:
        self.upstream, self.http, self.lifetime = upstream, http, lifetime
        self.refuse_for, self.io_timeout = refuse_for, io_timeout
        if callable(behaviours):
            self._choose = behaviours
        elif isinstance(behaviours, (str, bytes)):
            self._choose = lambda n: behaviours
        else:
            chosen = list(behaviours)
            if not chosen:
                raise ValueError("no behaviour given")
            self._choose = lambda n: chosen[min(n, len(chosen) - 1)]
        self._chosen: dict[int, Behaviour] = {}
        self.applied: list[Behaviour] = []  # the behaviour of each connection, in order (refused slots too)
        self.forwarded = 0  # requests (or piped connections) that reached the upstream
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    # life cycle

    def start(self) -> FaultProxy:
        self._started = time.monotonic()
        self._prepare(0)
        self._spawn(self._serve)
        return self

    def stop(self) -> None:
        self._stop.set()  # the accept loop closes the listener and every connection
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_) -> None:
        self.stop()

    # accepting

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        listener.settimeout(0.05)
        return listener

    def _serve(self) -> None:
        try:
            self._accept_loop()
        finally:
            self._stop.set()  # the lifetime is over (or the proxy broke): every connection ends
            if self._listener is not None:
                _close(self._listener)
            with self._lock:
                sockets = list(self._sockets)
            for sock in sockets:
                _close(sock)

    def _behaviour(self, n: int) -> Behaviour:
        if n not in self._chosen:
            behaviour = self._choose(n)
            if not isinstance(behaviour, bytes) and behaviour not in BEHAVIOURS:
                raise ValueError(f"unknown behaviour {behaviour!r}")
            if not self.http and (behaviour in ("lose_answer", "reset") or isinstance(behaviour, bytes)):
                raise ValueError(f"{behaviour!r} needs http=True")
            self._chosen[n] = behaviour
        return self._chosen[n]

    def _prepare(self, n: int) -> None:
        """Before connection n can arrive: listen, or stop listening if it is to be refused. Done as soon as the
        previous connection is accepted, before it is answered, so a client trying again finds the refusal in place."""
        if self._behaviour(n) == "refuse":
            if self._listener is not None:
                _close(self._listener)  # nobody listens: the kernel refuses
                self._listener = None
        elif self._listener is None:
            self._listener = self._listen(self.port)

    def _accept_loop(self) -> None:
        n = 0
        while not self._stop.is_set() and time.monotonic() - self._started < self.lifetime:
            behaviour = self._behaviour(n)
            if behaviour == "refuse":
                self.applied.append(behaviour)
                self._stop.wait(self.refuse_for)
                n += 1
                if not self._stop.is_set():
                    self._prepare(n)
                continue
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                break
            self.applied.append(behaviour)
            n += 1
            self._prepare(n)
            client.settimeout(self.io_timeout)
            self._track(client)
            self._spawn(self._handle, client, behaviour)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    # one connection

    def _handle(self, client: socket.socket, behaviour: Behaviour) -> None:
        try:
            if behaviour == "hang":
                while not self._stop.is_set():
                    try:
                        if not client.recv(65536):
                            break  # the client gave up
                    except (TimeoutError, socket.timeout):
                        continue
            elif not self.http:
                if behaviour == "pass":
                    self._pipe(client)
            else:
                request = _read_request(client)
                if request is None:
                    return
                if behaviour == "reset":
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    client.close()  # with a zero linger: an RST, not a FIN
                    return
                if isinstance(behaviour, bytes):
                    client.sendall(behaviour)
                else:
                    answer = self._ask_upstream(_with_connection_close(request))
                    if behaviour == "pass":
                        client.sendall(_with_connection_close(answer))
                    # "lose_answer": the upstream has answered, the client never hears it
        except OSError:
            pass
        finally:
            _close(client)

    def _connect_upstream(self) -> socket.socket:
        upstream = socket.create_connection(self.upstream, timeout=self.io_timeout)
        self._track(upstream)
        with self._lock:
            self.forwarded += 1
        return upstream

    def _ask_upstream(self, request: bytes) -> bytes:
        """Send one request (asking the upstream to close after it) and read the whole answer, to EOF."""
        upstream = self._connect_upstream()
        try:
            upstream.sendall(request)
            chunks = []
            while chunk := _recv(upstream):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            _close(upstream)

    def _pipe(self, client: socket.socket) -> None:
        upstream = self._connect_upstream()

        def copy(source: socket.socket, target: socket.socket) -> None:
            try:
                while chunk := _recv(source):
                    target.sendall(chunk)
            except OSError:
                pass
            finally:
                _close(source)
                _close(target)

        self._spawn(copy, upstream, client)
        copy(client, upstream)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except (TimeoutError, socket.timeout, OSError):
        return b""


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _read_request(sock: socket.socket) -> bytes | None:
    """One HTTP request: the head, then a Content-Length body or a chunked one (None: the client went away)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _recv(sock)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    headers = _headers(head)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while not body.endswith(b"0\r\n\r\n"):
            chunk = _recv(sock)
            if not chunk:
                return None
            body += chunk
    else:
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = _recv(sock)
            if not chunk:
                return None
            body += chunk
    return head + b"\r\n\r\n" + body


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}


def _with_connection_close(message: bytes) -> bytes:
    """The same request or answer, saying `Connection: close` (any keep-alive header dropped)."""
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        return message
    first, *lines = head.split(b"\r\n")
    kept = [line for line in lines if line.split(b":", 1)[0].strip().lower() not in (b"connection", b"keep-alive")]
    return b"\r\n".join([first, *kept, b"Connection: close"]) + b"\r\n\r\n" + body


def http_answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """A canned HTTP/1.1 answer for a behaviour."""
    lines = [f"HTTP/1.1 {status} Canned", f"Content-Length: {len(body)}", "Connection: close",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
