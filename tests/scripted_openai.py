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

The Batch API, as openai-python 3.63 speaks it: ``POST /v1/files`` (multipart upload,
``purpose=batch``), ``GET /v1/files/{id}`` and ``/v1/files/{id}/content``; ``POST /v1/batches``,
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``, ``GET /v1/batches`` (newest first,
``limit`` / ``after`` cursor). A batch moves one state per ``GET /v1/batches/{id}``:
``validating`` -> ``in_progress`` (``batch_lines_per_poll`` lines run per poll; default all) ->
``finalizing`` -> ``completed``; or ``failed`` (input that breaks the Batch API's rules: bad
JSON, duplicate ``custom_id``, another url, several models, over ``max_lines`` / ``max_bytes``),
``expired`` (``fate={"expire_after": n}``), ``cancelling`` -> ``cancelled``. Each line is
answered by ``reply`` like a live call: a 200 goes to the output file, any other status to the
error file (``response.status_code`` and ``response.body.error``, ``error`` null); requests an
expired or cancelled batch never ran go to the error file with ``error.code`` ``batch_expired``
/ ``batch_cancelled``. ``batch_fates`` holds one dict per batch, in creation order, with what
else to do: ``shuffle`` (output order), ``drop`` / ``duplicate`` (predicates on ``custom_id``: the
line is in neither file / written twice), ``expire_after``, ``fail`` (a validation message).
``hold_create=True`` creates the batch and then holds the response until :meth:`release` (the
test kills the client meanwhile).

Batch counters: ``routes`` (every request as ``"METHOD /path"`` with ids replaced by ``{id}``),
``uploads``, ``batches`` (id -> batch object), ``batch_lines`` (custom_id -> times a batch ran it).

Run standalone (``python tests/scripted_openai.py --latency 0.2``) for manual checks.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit


def verdict_reply(verdict: str) -> Callable[[dict], str]:
    """A judge that always answers with the given verdict text."""
    return lambda body: f"Both answers were read carefully. {verdict}"


def user_text(body: dict) -> str:
    return "\n".join(m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user")


def completion(body: dict, content: str, rid: str) -> dict:
    """A chat.completion object answering ``body`` with ``content``."""
    return {
        "id": f"chatcmpl-{rid}", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "scripted"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(user_text(body)) // 4, "completion_tokens": len(content) // 4,
                  "total_tokens": len(user_text(body)) // 4 + len(content) // 4},
    }


_TERMINAL = ("completed", "failed", "expired", "cancelled")


class ScriptedOpenAI:
    def __init__(self, reply: Callable[[dict], Any] | str = "[[C]]", *, latency: float = 0.0,
                 hold_at: int | None = None, require_key: str | None = None, batch_lines_per_poll: int | None = None,
                 batch_fates: list[dict] | None = None, hold_create: bool = False,
                 max_lines: int = 50_000, max_bytes: int = 200_000_000, batch_api: bool = True) -> None:
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
        self._lock = threading.RLock()
        # the Batch API
        self.batch_lines_per_poll = batch_lines_per_poll
        self.batch_fates = list(batch_fates or [])
        self.hold_create = hold_create
        self.batch_api = batch_api  # False: 404 on /files and /batches, like vLLM's and llama.cpp's servers
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.routes: Counter = Counter()
        self.files: dict[str, dict] = {}
        self.file_data: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self._work: dict[str, dict] = {}
        self.batch_lines: Counter = Counter()
        self.uploads = 0
        self._ids = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def log_message(self, *a):  # quiet
                pass

            def _batch_api(self, method: str, path: str, raw: bytes = b"") -> bool:
                """Answer a Files / Batches API request (404 without a Batch API, 401 with the wrong
                key); False when ``path`` is not one."""
                if not re.search(r"/(files|batches)(/|$)", path):
                    return False
                if not server.batch_api:
                    self._send(404, {"error": {"message": f"no route {path}"}})
                    return True
                if server.require_key and self.headers.get("Authorization") != f"Bearer {server.require_key}":
                    self._send(401, {"error": {"message": "invalid api key"}})
                    return True
                query = parse_qs(urlsplit(self.path).query)
                routes = (
                    ("GET", r"/files/([^/]+)$", lambda m: self._send_file(m.group(1), content=False)),
                    ("GET", r"/files/([^/]+)/content$", lambda m: self._send_file(m.group(1), content=True)),
                    ("GET", r"/batches/([^/]+)$", lambda m: self._send_batch(server._advance(m.group(1)))),
                    ("GET", r"/batches$", lambda m: self._send(200, server._list(query))),
                    ("POST", r"/files$", lambda m: self._send_or(400, "bad upload", server._upload(
                        self.headers.get("Content-Type", ""), raw))),
                    ("POST", r"/batches/([^/]+)/cancel$", lambda m: self._send_batch(server._cancel(m.group(1)))),
                    ("POST", r"/batches$", lambda m: self._create(raw)),
                )
                for verb, pattern, handle in routes:
                    m = re.search(pattern, path)
                    if verb == method and m:
                        handle(m)
                        return True
                self._send(404, {"error": {"message": f"no route {method} {path}"}})
                return True

            def _send_file(self, fid: str, *, content: bool) -> None:
                f = server.files.get(fid)
                if f is None:
                    self._send(404, {"error": {"message": f"no file {fid}"}})
                elif content:
                    self._send_bytes(200, server.file_data[fid])
                else:
                    self._send(200, f)

            def _send_batch(self, b: dict | None) -> None:
                self._send_or(404, "no such batch", b)

            def _send_or(self, status: int, message: str, obj: dict | None) -> None:
                self._send(200, obj) if obj else self._send(status, {"error": {"message": message}})

            def _create(self, raw: bytes) -> None:
                b = server._create(json.loads(raw or b"{}"))
                if b is None:
                    self._send(400, {"error": {"message": "no such input file"}})
                elif server.hold_create:  # the batch exists; its creator never hears of it
                    server.held.set()
                    server._release.wait(30)
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass
                else:
                    self._send(200, b)

            def do_GET(self):
                server._count("GET", self.path)
                path = urlsplit(self.path).path.rstrip("/")
                if path.endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
                elif not self._batch_api("GET", path):
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                server._count("POST", self.path)
                if self._batch_api("POST", urlsplit(self.path).path.rstrip("/"), raw):
                    return
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
                self._send(200, completion(body, content, str(k)))

            def _send(self, status, obj, headers=None):
                data = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
                self._send_bytes(status, data, headers, "application/json")

            def _send_bytes(self, status, data, headers=None, ctype="application/octet-stream"):
                with server._lock:
                    server.statuses[status] += 1
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
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

    # --- the Batch API ---------------------------------------------------------------------------

    def _count(self, method: str, path: str) -> None:
        route = re.sub(r"/(file|batch)[-_][A-Za-z0-9]+", r"/{id}", urlsplit(path).path.rstrip("/"))
        with self._lock:
            self.routes[f"{method} {route.replace('/v1', '', 1)}"] += 1

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}{self._ids}"

    def _file(self, data: bytes, name: str, purpose: str) -> dict:
        fid = self._new_id("file-")
        f = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()), "filename": name,
             "purpose": purpose, "status": "processed"}
        with self._lock:
            self.files[fid], self.file_data[fid] = f, data
        return f

    def _upload(self, ctype: str, raw: bytes) -> dict | None:
        msg = BytesParser(policy=email_policy).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + raw)
        fields, data, name = {}, None, "upload"
        for part in msg.iter_parts():
            field = part.get_param("name", header="content-disposition")
            if field == "file":
                data, name = part.get_payload(decode=True), part.get_filename() or name
            else:
                fields[field] = part.get_content().strip()
        if data is None:
            return None
        with self._lock:
            self.uploads += 1
        return self._file(data, name, fields.get("purpose", ""))

    def _create(self, req: dict) -> dict | None:
        fid = req.get("input_file_id")
        if fid not in self.files:
            return None
        bid = self._new_id("batch_")
        now = int(time.time())
        b = {"id": bid, "object": "batch", "endpoint": req.get("endpoint"), "errors": None, "input_file_id": fid,
             "completion_window": req.get("completion_window"), "status": "validating", "output_file_id": None,
             "error_file_id": None, "created_at": now, "in_progress_at": None, "expires_at": now + 86400,
             "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
             "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
             "metadata": req.get("metadata")}
        with self._lock:
            fate = self.batch_fates.pop(0) if self.batch_fates else {}
            self.batches[bid] = b
            self._work[bid] = {"fate": fate, "lines": [], "done": 0, "out": [], "err": []}
        return dict(b)

    def _validate(self, bid: str) -> str | None:
        b, w = self.batches[bid], self._work[bid]
        data = self.file_data[b["input_file_id"]]
        if w["fate"].get("fail"):
            return w["fate"]["fail"]
        if len(data) > self.max_bytes:
            return f"input file is {len(data)} bytes, over {self.max_bytes}"
        ids, models = set(), set()
        for n, raw in enumerate(data.split(b"\n"), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                return f"line {n}: not JSON"
            if line.get("method") != "POST" or line.get("url") != b["endpoint"]:
                return f"line {n}: method/url must be POST {b['endpoint']}"
            if line.get("custom_id") in ids:
                return f"line {n}: duplicate custom_id"
            ids.add(line.get("custom_id"))
            models.add((line.get("body") or {}).get("model"))
            w["lines"].append(line)
        if len(w["lines"]) > self.max_lines:
            return f"{len(w['lines'])} requests, over {self.max_lines}"
        if len(models) > 1:
            return f"several models in one file: {sorted(map(str, models))}"
        b["request_counts"]["total"] = len(w["lines"])
        return None

    def _run_line(self, bid: str, line: dict) -> None:
        w = self._work[bid]
        cid = line["custom_id"]
        with self._lock:
            self.batch_lines[cid] += 1
        out = self.reply(line["body"])
        action = out if isinstance(out, dict) else {"content": str(out)}
        status = int(action.get("status", 200))
        rid = self._new_id("req_")
        if status == 200:
            body = action["body"] if "body" in action else completion(line["body"], action.get("content", ""), rid)
            rec = {"id": f"batch_req_{rid}", "custom_id": cid, "response": {
                "status_code": 200, "request_id": rid, "body": body}, "error": None}
            w["out"].append(rec)
            self.batches[bid]["request_counts"]["completed"] += 1
        else:
            rec = {"id": f"batch_req_{rid}", "custom_id": cid, "response": {
                "status_code": status, "request_id": rid,
                "body": {"error": {"message": action.get("content", "scripted error"), "type": "scripted",
                                   "code": None}}}, "error": None}
            w["err"].append(rec)
            self.batches[bid]["request_counts"]["failed"] += 1

    def _finish(self, bid: str, status: str) -> None:
        b, w = self.batches[bid], self._work[bid]
        fate = w["fate"]
        if status in ("expired", "cancelled"):
            code = "batch_expired" if status == "expired" else "batch_cancelled"
            for line in w["lines"][w["done"]:]:
                w["err"].append({"id": f"batch_req_{self._new_id('req_')}", "custom_id": line["custom_id"],
                                 "response": None, "error": {"code": code, "message": f"the batch {status} first"}})
        outs, errs = list(w["out"]), list(w["err"])
        drop, dup = fate.get("drop") or (lambda cid: False), fate.get("duplicate") or (lambda cid: False)
        outs = [r for r in outs if not drop(r["custom_id"])] + [r for r in outs if dup(r["custom_id"])]
        errs = [r for r in errs if not drop(r["custom_id"])] + [r for r in errs if dup(r["custom_id"])]
        if fate.get("shuffle"):
            random.Random(7).shuffle(outs)
            random.Random(8).shuffle(errs)
        if outs:
            b["output_file_id"] = self._file(b"".join(json.dumps(r).encode() + b"\n" for r in outs),
                                             "batch_output.jsonl", "batch_output")["id"]
        if errs:
            b["error_file_id"] = self._file(b"".join(json.dumps(r).encode() + b"\n" for r in errs),
                                            "batch_error.jsonl", "batch_error")["id"]
        b["status"] = status
        b[f"{status}_at"] = int(time.time())

    def _advance(self, bid: str) -> dict | None:
        """One step of the state machine (each retrieve is one poll)."""
        with self._lock:
            b = self.batches.get(bid)
            if b is None:
                return None
            w = self._work[bid]
            st = b["status"]
            if st == "validating":
                why = self._validate(bid)
                if why:
                    b.update(status="failed", failed_at=int(time.time()),
                             errors={"object": "list", "data": [{"code": "invalid_request", "message": why}]})
                else:
                    b.update(status="in_progress", in_progress_at=int(time.time()))
            elif st == "in_progress":
                step = self.batch_lines_per_poll or len(w["lines"])
                limit = w["fate"].get("expire_after")
                for line in w["lines"][w["done"]:w["done"] + step]:
                    if limit is not None and w["done"] >= limit:
                        break
                    self._run_line(bid, line)
                    w["done"] += 1
                if limit is not None and w["done"] >= limit and w["done"] < len(w["lines"]):
                    self._finish(bid, "expired")
                elif w["done"] >= len(w["lines"]):
                    b.update(status="finalizing", finalizing_at=int(time.time()))
            elif st == "finalizing":
                self._finish(bid, "completed")
            elif st == "cancelling":
                self._finish(bid, "cancelled")
            return json.loads(json.dumps(b))

    def _cancel(self, bid: str) -> dict | None:
        with self._lock:
            b = self.batches.get(bid)
            if b is None:
                return None
            if b["status"] in ("validating", "in_progress", "finalizing"):
                if b["status"] == "validating":
                    self._validate(bid)
                b.update(status="cancelling", cancelling_at=int(time.time()))
            return json.loads(json.dumps(b))

    def _list(self, query: dict) -> dict:
        with self._lock:
            items = sorted(self.batches.values(), key=lambda b: int(b["id"].split("_")[1]), reverse=True)
        after = (query.get("after") or [None])[0]
        if after:
            ids = [b["id"] for b in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        limit = int((query.get("limit") or [20])[0])
        page = [json.loads(json.dumps(b)) for b in items[:limit]]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}

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
