"""The few Redis commands the example needs, over RESP with the standard library only
(a real app would use redis-py; this keeps the image buildable without a package index)."""

import socket
from urllib.parse import urlparse


class Redis:
    def __init__(self, url, timeout=30):
        parsed = urlparse(url)
        self.sock = socket.create_connection((parsed.hostname, parsed.port or 6379), timeout=timeout)
        self.file = self.sock.makefile("rb")
        if parsed.password:
            self.call("AUTH", parsed.password)

    def call(self, *args):
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._read()

    def _read(self):
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)[:-2]
            return data.decode()
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise RuntimeError(f"unexpected reply {line!r}")
