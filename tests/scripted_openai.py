"""A real local HTTP server speaking the OpenAI chat-completions protocol, scripted by tests.

``ScriptedOpenAI(reply)`` listens on 127.0.0.1 (a free port) in a thread. ``reply`` decides each
answer from the request body (a dict): it returns the assistant text (str) or a dict
``{"status": 429|500|401|..., "delay": s, "content": text, "headers": {...}}`` (``"body"``: a 200
whose whole body is that text or JSON value, for malformed replies). ``queue`` holds
one-shot actions used before ``reply`` (e.g. a 429 then the normal answer).

Counters: ``calls`` (requests answered with 200), ``requests`` (all requests), ``statuses``
(every status sent), ``bodies`` (the JSON of answered requests). ``hold_at=k`` makes the k-th
request wait until :meth:`release` (the test kills the client meanwhile); a held request is
closed without an answer and counted in ``aborted``, not in ``calls``.

Run standalone (``python tests/scripted_openai.py --latency 0.2``) for manual checks.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


def verdict_reply(verdict: str) -> Callable[[dict], str]:
    """A judge that always answers with the given verdict text."""
    return lambda body: f"Both answers were read carefully. {verdict}"


def user_text(body: dict) -> str:
    return "\n".join(m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user")


class ScriptedOpenAI:
    def __init__(self, reply: Callable[[dict], Any] | str = "[[C]]", *, latency: float = 0.0,
                 hold_at: int | None = None, require_key: str | None = None) -> None:
        self.reply = reply if callable(reply) else (lambda body, _r=reply: _r)
        self.latency = latency
        self.hold_at = hold_at
        self.require_key = require_key
        self.queue: list[dict] = []
        self.calls = 0
        self.requests = 0
        self.aborted = 0
        self.statuses: Counter = Counter()
        self.bodies: list[dict] = []
        self.auth_headers: list[str] = []
        self.held = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                with server._lock:
                    server.requests += 1
                    k = server.requests
                    server.auth_headers.append(self.headers.get("Authorization", ""))
                    action = server.queue.pop(0) if server.queue else None
                if server.hold_at is not None and k == server.hold_at:
                    server.held.set()
                    server._release.wait(30)
                    with server._lock:
                        server.aborted += 1
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    self._send(400, {"error": {"message": "bad json"}})
                    return
                if server.require_key and self.headers.get("Authorization") != f"Bearer {server.require_key}":
                    action = {"status": 401, "content": "invalid api key"}
                if action is None:
                    out = server.reply(body)
                    action = out if isinstance(out, dict) else {"content": str(out)}
                delay = action.get("delay", server.latency)
                if delay:
                    time.sleep(delay)
                status = int(action.get("status", 200))
                if status != 200:
                    self._send(status, {"error": {"message": action.get("content", "scripted error"),
                                                  "type": "scripted"}}, action.get("headers"))
                    return
                content = action.get("content", "")
                with server._lock:
                    server.calls += 1
                    server.bodies.append(body)
                if "body" in action:  # a 200 whose body is scripted as it is (text sent raw, a dict as JSON)
                    self._send(200, action["body"])
                    return
                self._send(200, {
                    "id": f"chatcmpl-{k}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "scripted"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": len(user_text(body)) // 4, "completion_tokens": len(content) // 4,
                              "total_tokens": len(user_text(body)) // 4 + len(content) // 4},
                })

            def _send(self, status, obj, headers=None):
                data = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
                with server._lock:
                    server.statuses[status] += 1
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for hk, hv in (headers or {}).items():
                        self.send_header(hk, hv)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def release(self) -> None:
        self._release.set()

    def __enter__(self) -> "ScriptedOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--verdict", default="[[C]]")
    a = ap.parse_args()
    with ScriptedOpenAI(verdict_reply(a.verdict), latency=a.latency) as s:
        print(s.url, flush=True)
        threading.Event().wait()
