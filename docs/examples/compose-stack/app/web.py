"""The public service: counts visits in Redis, queues a job per visit for the worker, and
answers /healthz once Redis and PostgreSQL accept connections."""

import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

from resp import Redis

REDIS_URL = os.environ["REDIS_URL"]
DATABASE = urlparse(os.environ["DATABASE_URL"])


def database_reachable():
    try:
        socket.create_connection((DATABASE.hostname, DATABASE.port or 5432), timeout=2).close()
        return True
    except OSError:
        return False


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            ok = Redis(REDIS_URL).call("PING") == "PONG" and database_reachable()
            self.answer(200 if ok else 503, "ok\n" if ok else "not ready\n")
            return
        redis = Redis(REDIS_URL)
        visits = redis.call("INCR", "visits")
        redis.call("LPUSH", "jobs", f"visit {visits}")
        done = redis.call("GET", "jobs:done") or "0"
        self.answer(200, f"visits: {visits}, jobs done by the worker: {done}\n")

    def answer(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "3000"))), Handler).serve_forever()
