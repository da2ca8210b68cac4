"""``plug-lite serve``: a GGUF behind an OpenAI-compatible HTTP API, the pivot kept apart.

``plug-lite serve MODEL.gguf`` answers ``GET /v1/models`` and ``POST /v1/chat/completions``
(with and without ``stream``) on http://127.0.0.1:8080/v1, so Open WebUI, LibreChat, Jan,
Chatbox, the ``openai`` SDK and anything else that speaks OpenAI's API can use a PLUG model. The
wire format (fields, errors, what is refused) and where each section of a PLUG answer goes are
:mod:`plug_lite.openai_api`'s: by default the pivot instruction and draft go to
``reasoning_content`` (rendered as a collapsed "thinking" block by clients that know the field,
ignored by the others) and the target answer alone to ``content``; ``--pivot`` or a request's
``"pivot"`` field picks ``reasoning``, ``hidden`` or ``content`` (the raw output). Mono and plain
GGUFs are served as plain models (their whole output is ``content``).

The model is shown what ``plug-lite chat`` shows it (:mod:`plug_lite.conversation`): its own PLUG
system prompt, a client's system message appended after it (``--client-system`` changes the
rule), and earlier assistant turns reduced to their target answers.

Concurrency: requests **queue on the one model**, first come first served; one worker thread owns
the llama.cpp context and generates for one request at a time while the HTTP side keeps
accepting, streaming and answering ``/health``. Several contexts would each hold a KV cache and
split the same cores without batching, so on a CPU they would not answer sooner in total; for
many simultaneous users, llama.cpp's own ``llama-server`` (continuous batching over slots) is
the tool. A client that disconnects stops its generation after the token in flight (and a
request still waiting in the queue is dropped), so the engine moves on to the next request.
Streamed deltas are whole characters (the engine decodes UTF-8 incrementally).

Safe defaults: 127.0.0.1 unless ``--host``; ``--api-key`` (or ``PLUG_LITE_API_KEY``) makes every
``/v1`` route require ``Authorization: Bearer KEY`` (401 otherwise; ``/health`` stays open); no
CORS headers unless ``--cors ORIGIN``. Bad requests get OpenAI-style JSON errors with a 4xx
status and no traceback. On start it prints the URL and a ready ``curl`` line (never the key);
``--json`` writes one JSON line per request to stdout (tokens, seconds, time in the queue, time
to the first target token, decode tokens/s, why it ended), a short line on stderr otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import queue
import socket
import sys
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from . import __version__, conversation, formats, openai_api
from .cli import run
from .engine import EngineOptions, LlamaEngine
from .io import UserError
from .openai_api import APIError, ChatRequest
from .prompted import PromptedPlug
from .spec import PlugSpec

__all__ = ["Job", "Backend", "create_app", "Running", "serving", "main", "cli"]

DEFAULT_PORT = 8080
MAX_BODY = 16 * 2**20  # bytes of one request body
MIN_ROOM = 16  # tokens the context must have left after the prompt
API_KEY_ENV = "PLUG_LITE_API_KEY"


def check_settings(pivot: str, client_system: str) -> None:
    if pivot not in openai_api.PIVOT_MODES:
        raise UserError(f"--pivot must be one of {', '.join(openai_api.PIVOT_MODES)} (got {pivot!r})")
    if client_system not in conversation.CLIENT_SYSTEM_RULES:
        raise UserError(f"--client-system must be one of {', '.join(conversation.CLIENT_SYSTEM_RULES)} "
                        f"(got {client_system!r})")


# --------------------------------------------------------------------------------------------
# The model and its queue


@dataclass
class Job:
    """One chat completion: what to generate, where its pieces go, and what it cost."""

    id: str
    created: int
    prompt: list[int]
    stop: list[str]
    max_tokens: int
    temperature: float
    seed: int | None
    sampling: dict
    pivot: str
    stream: bool
    include_usage: bool = False
    #: called from the worker thread with ("delta", [(field, text), ...]), ("end", info) or
    #: ("error", message)
    emit: Callable[[tuple], None] = lambda item: None
    cancel: threading.Event = field(default_factory=threading.Event)
    cancelled_at: float | None = None  # perf_counter when the client went away
    submitted: float = field(default_factory=time.perf_counter)
    stats: dict = field(default_factory=dict)

    def stop_now(self) -> None:
        """The client is gone: stop generating (or never start)."""
        if not self.cancel.is_set():
            self.cancelled_at = time.perf_counter()
            self.cancel.set()


class Backend:
    """One loaded GGUF, its PLUG spec and conversation settings, and the worker thread that
    generates for one :class:`Job` at a time, in the order they were submitted."""

    def __init__(self, engine: LlamaEngine, *, name: str | None = None, pivot: str = "reasoning",
                 system: str | None = None, client_system: str = "append", max_new_tokens: int = 1024,
                 temperature: float = 0.0, prompted: PromptedPlug | None = None,
                 on_done: Callable[[Job], None] | None = None) -> None:
        check_settings(pivot, client_system)
        self.engine = engine
        #: prompted PLUG: the instruction and worked examples ask a model with no PLUG training
        self.prompted = prompted
        self.spec: PlugSpec | None = prompted.spec if prompted else engine.spec()
        self.name = name or engine.path.stem
        self.pivot, self.system, self.client_system = pivot, system, client_system
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.on_done = on_done or (lambda job: None)
        # think: parse both variants unless the GGUF records which one (as plug-lite chat does)
        recorded = PlugSpec.gguf_values(engine.metadata)
        if prompted:
            self.think = False
        else:
            self.think = self.spec.think if self.spec and "think" in recorded else None
        self.created = int(engine.path.stat().st_mtime)
        ident = f"{engine.path.name}:{engine.path.stat().st_size}:{__version__}"
        self.fingerprint = "fp_" + hashlib.sha256(ident.encode()).hexdigest()[:10]
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._current: Job | None = None
        self._thread: threading.Thread | None = None
        self.generated_tokens = 0
        self.served = 0

    @property
    def mode(self) -> str:
        """``plug`` (the pivot is split off) or ``plain`` (mono, plain and other formats)."""
        return "plug" if self.spec and self.spec.format == "plug" else "plain"

    def describe(self) -> str:
        if self.spec is None:
            return "plain model"
        if self.mode == "plug":
            how = f"prompted PLUG, {len(self.prompted.examples)} worked examples" if self.prompted else "PLUG"
            return (f"{how}, {self.spec.target_language.name} via {self.spec.pivot_language.name}; "
                    f"pivot -> {self.pivot}")
        return f"{self.spec.format}, {self.spec.target_language.name}: served as a plain model"

    # -- requests
    def prepare(self, req: ChatRequest) -> Job:
        """The :class:`Job` for a checked request: the conversation as the model sees it,
        tokenized; raises :class:`APIError` when it does not fit the context or the chat template
        refuses it."""
        own = self.prompted.system_prompt() if self.prompted and self.system is None else self.system
        msgs = conversation.from_client(req.messages, self.spec, override=own, rule=self.client_system)
        if self.prompted is not None:  # the worked examples come before the client's turns
            head = 1 if msgs and msgs[0]["role"] == "system" else 0
            msgs = msgs[:head] + self.prompted.shots() + msgs[head:]
        try:
            toks, stop = self.engine.tokenize(msgs)
        except Exception as e:  # the chat template raised (e.g. roles that do not alternate)
            raise APIError(400, f"the model's chat template refused these messages: {e}", param="messages") from None
        n_ctx = self.engine.n_ctx
        room = n_ctx - len(toks)
        if room < MIN_ROOM:
            raise APIError(400, f"this model's context holds {n_ctx} tokens and the messages take {len(toks)} "
                                f"(at least {MIN_ROOM} must be left for the answer): shorten the conversation",
                           param="messages", code="context_length_exceeded")
        return Job(id=openai_api.new_id(), created=int(time.time()), prompt=toks, stop=stop + req.stop,
                   max_tokens=min(req.max_tokens or self.max_new_tokens, room),
                   temperature=self.temperature if req.temperature is None else req.temperature,
                   seed=req.seed, sampling=dict(req.sampling),
                   pivot=req.pivot or self.pivot, stream=req.stream, include_usage=req.include_usage,
                   stats={"prompt_tokens": len(toks)})

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def health(self) -> dict:
        cur = self._current
        return {"status": "ok", "model": self.name, "busy": cur is not None, "queued": self._jobs.qsize(),
                "served": self.served, "generated_tokens": self.generated_tokens}

    # -- the worker
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="plug-lite-serve-worker", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Cancel what is queued and running, and end the worker."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.stop_now()
                self._finish(job, "cancelled")
        if self._current is not None:
            self._current.stop_now()
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.cancel.is_set():
                self._finish(job, "cancelled")
                continue
            self._current = job
            try:
                self.generate(job)
            except Exception as e:  # never kill the worker; the client gets an error event
                job.stats["error"] = f"{type(e).__name__}: {e}"
                job.emit(("error", "the model failed while generating this answer"))
                self._finish(job, "error")
            finally:
                self._current = None

    def _finish(self, job: Job, reason: str) -> None:
        job.stats.setdefault("finish_reason", reason)
        if reason == "cancelled" and job.cancelled_at is not None:
            job.stats["stopped_after_disconnect_s"] = round(time.perf_counter() - job.cancelled_at, 4)
        self.served += 1
        self.on_done(job)

    def generate(self, job: Job) -> None:
        """Generate ``job`` (in the worker thread): its pieces go to ``job.emit`` as they come,
        then ("end", {finish_reason, usage}). Stops after the token in flight once
        ``job.cancel`` is set."""
        eng, st = self.engine, job.stats
        t0 = time.perf_counter()
        st["queue_s"] = round(t0 - job.submitted, 4)
        parser = None
        if self.mode == "plug":
            parser = formats.StreamParser(**self.spec.parser_args(), think=self.think)
        split = openai_api.PivotSplit(job.pivot, self.spec.pivot_language) if parser and job.pivot != "content" else None
        n, first_token, first_target, pivot_tokens = 0, None, None, None
        reason = "cancelled"

        def found_target(events, count) -> None:
            nonlocal first_target, pivot_tokens
            if first_target is None and (parser is None or any(e.section == "target" for e in events)):
                first_target, pivot_tokens = time.perf_counter(), (count if parser else 0)

        gen = eng.stream(job.prompt, max_tokens=job.max_tokens, temperature=job.temperature, stop=job.stop,
                         seed=job.seed, sampling=job.sampling)
        try:
            for delta, n in gen:
                if job.cancel.is_set():
                    break
                if first_token is None:
                    first_token = time.perf_counter()
                events = parser.feed(delta) if parser else []
                found_target(events, n - 1)
                pieces = split.pieces(events) if split else [("content", delta)]
                if pieces:
                    job.emit(("delta", pieces))
            else:
                reason = eng.finish_reason
        finally:
            gen.close()
        end = time.perf_counter()
        completion = eng.completion_tokens if reason != "cancelled" else n
        self.generated_tokens += completion
        if parser is not None and reason != "cancelled":
            events = parser.close(finished=reason != "length")
            found_target(events, completion)
            if split:
                pieces = split.pieces(events) + split.finish(parser.result)
                if pieces:
                    job.emit(("delta", pieces))
        if parser is not None and pivot_tokens is None:
            pivot_tokens = completion
        reasoning = None
        if parser is not None:
            reasoning = pivot_tokens if job.pivot != "content" else 0
        st.update(completion_tokens=completion, pivot_tokens=pivot_tokens, seconds=round(end - t0, 4),
                  first_token_s=round(first_token - t0, 4) if first_token else None,
                  first_target_s=round(first_target - t0, 4) if first_target else None,
                  decode_tokens_per_s=(round((completion - 1) / (end - first_token), 2)
                                       if first_token and completion > 1 and end > first_token else None),
                  finish_reason=reason)
        if reason != "cancelled":
            job.emit(("end", {"finish_reason": reason,
                              "usage": openai_api.usage(st["prompt_tokens"], completion, reasoning)}))
        self._finish(job, reason)


# --------------------------------------------------------------------------------------------
# HTTP


def _json_response(body: dict, status: int = 200, headers: dict | None = None):
    from starlette.responses import Response

    return Response(json.dumps(body, ensure_ascii=False), status_code=status, headers=headers,
                    media_type="application/json")


async def _read_body(request) -> bytes:
    size = int(request.headers.get("content-length") or 0)
    if size > MAX_BODY:
        raise APIError(413, f"the request body is {size} bytes; at most {MAX_BODY} are accepted")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_BODY:
            raise APIError(413, f"the request body is over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _until_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _Gate:
    """ASGI middleware: the bearer-key check on ``/v1`` routes and one log line per request
    that did not become a job (a job logs itself when it ends)."""

    def __init__(self, app, *, api_key: str | None, log: Callable[[dict], None]) -> None:
        self.app, self.key, self.log = app, (api_key.encode() if api_key else None), log

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        if self.key is not None and scope["path"].startswith("/v1") and not self._authorized(scope):
            body = openai_api.error_body("a valid API key is required: send 'Authorization: Bearer KEY'",
                                         code="invalid_api_key")
            await _json_response(body, 401, {"WWW-Authenticate": "Bearer"})(scope, receive, send_status)
        else:
            await self.app(scope, receive, send_status)
        if not scope.get("plug_lite.job"):
            self.log({"method": scope["method"], "path": scope["path"], "status": status["code"],
                      "seconds": round(time.perf_counter() - t0, 4), **scope.get("plug_lite.error", {})})

    def _authorized(self, scope) -> bool:
        for k, v in scope["headers"]:
            if k == b"authorization":
                scheme, _, token = v.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)
        return False


def create_app(backend: Backend, *, api_key: str | None = None, cors: list[str] | None = None,
               log: Callable[[dict], None] | None = None, on_ready: Callable[[], None] | None = None):
    """The ASGI app for ``backend``: routes, errors as OpenAI writes them, the key check, CORS
    for ``cors`` origins only. Its lifespan starts and stops the backend's worker."""
    from sse_starlette import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware
    from starlette.routing import Route

    log = log or (lambda rec: None)

    def api_error(request, exc: APIError):
        request.scope["plug_lite.error"] = {"error": exc.message}
        return _json_response(exc.body(), exc.status)

    def http_error(request, exc: HTTPException):
        msg = {404: f"no route {request.method} {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return _json_response(openai_api.error_body(msg), exc.status_code, getattr(exc, "headers", None))

    def server_error(request, exc: Exception):
        request.scope["plug_lite.error"] = {"error": f"{type(exc).__name__}: {exc}"}
        return _json_response(openai_api.error_body("the server failed on this request", type="server_error"), 500)

    async def models(request):
        return _json_response({"object": "list", "data": [openai_api.model_object(backend.name, backend.created)]})

    async def model(request):
        if request.path_params["model_id"] != backend.name:
            raise APIError(404, f"the model '{request.path_params['model_id']}' does not exist; this server has "
                                f"'{backend.name}'", param="model", code="model_not_found")
        return _json_response(openai_api.model_object(backend.name, backend.created))

    async def health(request):
        return _json_response(backend.health())

    async def chat_completions(request):
        import anyio

        req = openai_api.parse_chat_request(await _read_body(request))
        job = await anyio.to_thread.run_sync(backend.prepare, req)
        loop, items = asyncio.get_running_loop(), asyncio.Queue()

        def emit(item) -> None:
            try:
                loop.call_soon_threadsafe(items.put_nowait, item)
            except RuntimeError:  # the event loop is gone (shutting down): nobody is listening
                job.stop_now()

        job.emit = emit
        request.scope["plug_lite.job"] = job.id
        backend.submit(job)
        common = {"id": job.id, "created": job.created, "model": backend.name, "fingerprint": backend.fingerprint}
        if req.stream:
            return EventSourceResponse(_events(job, items, common), sep="\n")
        return await _answer(request, job, items, common)

    async def _events(job: Job, items: asyncio.Queue, common: dict):
        def data(obj) -> str:
            return json.dumps(obj, ensure_ascii=False)

        try:
            yield data(openai_api.chunk(**common, delta={"role": "assistant", "content": ""}))
            while True:
                kind, payload = await items.get()
                if kind == "delta":
                    for fld, text in payload:
                        yield data(openai_api.chunk(**common, delta={fld: text}))
                elif kind == "end":
                    yield data(openai_api.chunk(**common, delta={}, finish_reason=payload["finish_reason"]))
                    if job.include_usage:
                        yield data(openai_api.usage_chunk(**common, usage=payload["usage"]))
                    yield "[DONE]"
                    return
                else:
                    yield data(openai_api.error_body(payload, type="server_error"))
                    return
        finally:
            job.stop_now()  # the client went away (or the answer is complete: then it changes nothing)

    async def _answer(request, job: Job, items: asyncio.Queue, common: dict):
        from starlette.responses import Response

        async def collect():
            parts: dict[str, list[str]] = {"content": [], "reasoning_content": []}
            while True:
                kind, payload = await items.get()
                if kind == "delta":
                    for fld, text in payload:
                        parts[fld].append(text)
                elif kind == "end":
                    return parts, payload
                else:
                    raise RuntimeError(payload)

        collecting = asyncio.ensure_future(collect())
        gone = asyncio.ensure_future(_until_disconnect(request.receive))
        try:
            await asyncio.wait({collecting, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not collecting.done():
                job.stop_now()
                collecting.cancel()
        if not collecting.done() or collecting.cancelled():
            return Response(status_code=499)  # the client closed the request; nobody reads this
        if collecting.exception() is not None:
            return _json_response(openai_api.error_body(str(collecting.exception()), type="server_error"), 500)
        parts, end = collecting.result()
        reasoning = "".join(parts["reasoning_content"]) if parts["reasoning_content"] else None
        return _json_response(openai_api.completion(**common, content="".join(parts["content"]), reasoning=reasoning,
                                                    finish_reason=end["finish_reason"], usage=end["usage"]))

    @asynccontextmanager
    async def lifespan(app):
        backend.start()
        if on_ready:
            on_ready()
        try:
            yield
        finally:
            backend.stop()

    middleware = [Middleware(_Gate, api_key=api_key, log=log)]
    if cors:
        # outermost, so that a browser's preflight is answered before the key check; any request
        # header from those origins: the openai JavaScript SDK also sends X-Stainless-* headers
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=list(cors), allow_methods=["GET", "POST"],
                                        allow_headers=["*"]))
    routes = [Route("/v1/models", models, methods=["GET"]),
              Route("/v1/models/{model_id:path}", model, methods=["GET"]),
              Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/health", health, methods=["GET"])]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                     exception_handlers={APIError: api_error, HTTPException: http_error, Exception: server_error})


# --------------------------------------------------------------------------------------------
# Running it


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: a free port); a one-line error when taken."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise UserError(f"--host {host}: not an address this machine can listen on ({e})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}): pick another --port or --host") from None
    sock.listen(128)
    return sock


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    return f"http://{shown}:{port}/v1"


def banner(backend: Backend, url: str, *, api_key: bool, host: str) -> str:
    """What ``plug-lite serve`` prints once it listens: the model, the URL, a curl line."""
    question = "Hello!"
    if backend.spec is not None:
        try:
            from . import evalsets

            question = evalsets.load_eval_set("sample", backend.spec.target, limit=1)[0]["instruction"]
        except Exception:
            pass
    body = json.dumps({"model": backend.name, "messages": [{"role": "user", "content": question}]}, ensure_ascii=False)
    auth = f" -H \"Authorization: Bearer ${API_KEY_ENV}\"" if api_key else ""
    lines = [f"plug-lite serve: {backend.engine.path.name} ({backend.describe()}), context {backend.engine.n_ctx}",
             f"OpenAI-compatible API at {url}  (model id: {backend.name})",
             f"try: curl {url}/chat/completions -H 'Content-Type: application/json'{auth} -d '{body}'"]
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        lines.append(f"warning: listening on {host} without --api-key: anyone who can reach this machine can use it")
    return "\n".join(lines)


def _logger(as_json: bool, out=None, err=None) -> Callable[[dict], None]:
    lock = threading.Lock()

    def log(rec: dict) -> None:
        rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **rec}
        with lock:
            if as_json:
                print(json.dumps(rec, ensure_ascii=False), file=out or sys.stdout, flush=True)
            else:
                print(_log_text(rec), file=err or sys.stderr, flush=True)

    return log


def _log_text(rec: dict) -> str:
    head = f"{rec.get('method', 'POST')} {rec.get('path', '/v1/chat/completions')} {rec.get('status', 200)}"
    if "completion_tokens" not in rec:
        return head + (f": {rec['error']}" if rec.get("error") else "")
    tps = f"{rec['decode_tokens_per_s']:.1f} tok/s" if rec.get("decode_tokens_per_s") else "- tok/s"
    ft = f"{rec['first_target_s']:.2f}s" if rec.get("first_target_s") is not None else "-"
    piv = f" (pivot {rec['pivot_tokens']})" if rec.get("pivot_tokens") is not None else ""
    return (f"{head} {'stream' if rec.get('stream') else 'json'}: {rec['prompt_tokens']}+{rec['completion_tokens']} "
            f"tokens{piv}, {rec['seconds']:.2f}s, {tps}, first answer token {ft}, {rec['finish_reason']}")


def job_record(job: Job) -> dict:
    """The log record of a finished job."""
    return {"method": "POST", "path": "/v1/chat/completions", "status": 200, "id": job.id, "stream": job.stream,
            "pivot": job.pivot, **job.stats}


@dataclass
class Running:
    """A server running in a thread of this process (:func:`serving`)."""

    url: str
    port: int
    backend: Backend


@contextmanager
def serving(model: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
            cors: list[str] | None = None, log: Callable[[dict], None] | None = None,
            options: EngineOptions | None = None, **backend_kw) -> Iterator[Running]:
    """Serve ``model`` from a thread of this process (a notebook, a test) until the block ends.
    ``options``: how llama.cpp loads it; ``backend_kw``: :class:`Backend` settings."""
    import uvicorn

    engine = LlamaEngine(model, options)
    log = log or (lambda rec: None)
    backend = Backend(engine, on_done=lambda job: log(job_record(job)), **backend_kw)
    sock = bind(host, port)
    actual = sock.getsockname()[1]
    app = create_app(backend, api_key=api_key, cors=cors, log=log)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="plug-lite-serve", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server thread ended before it started")
            time.sleep(0.02)
        yield Running(_url(host, actual), actual, backend)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        engine.close()


def main(
    model: str,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    api_key: str | None = None,
    cors: list[str] | None = None,
    pivot: str = "reasoning",
    client_system: str = "append",
    system: str | None = None,
    name: str | None = None,
    options: EngineOptions = EngineOptions(),
    max_new_tokens: int = 1024,
    temperature: float = 0.0,
    as_json: bool = False,
    prompted: bool = False,
    target: str | None = None,
    shots: int = 2,
    examples: str | None = None,
) -> int:
    """Serve a GGUF over an OpenAI-compatible HTTP API (/v1/models, /v1/chat/completions).

    Args:
        model: a .gguf file
        host: address to listen on (default 127.0.0.1: this machine only)
        port: port to listen on (0: any free port)
        api_key: require 'Authorization: Bearer KEY' on /v1 routes (default: the PLUG_LITE_API_KEY environment variable; none when unset)
        cors: allow browser pages from this origin (repeatable; default: no CORS headers)
        pivot: where a PLUG answer's pivot goes: reasoning (reasoning_content, the target answer alone in content), hidden (not sent) or content (the raw output); a request's "pivot" field overrides it
        client_system: a client's system message: append (after the model's PLUG prompt), ignore, or replace the model's prompt
        system: system prompt instead of the model's own
        name: the model id clients see (default: the file name without .gguf)
        options: how llama.cpp loads the model (--ctx, --gpu-layers, --threads, --lora, --seed: the sampler's seed at start, a request's seed resets it for that request; --verbose)
        max_new_tokens: tokens per answer when a request gives no max_tokens
        temperature: temperature when a request gives none (0 = greedy, as the model was evaluated)
        as_json: one JSON line per request on stdout (tokens, seconds, time to the first target token)
        prompted: prompted PLUG: ask an instruct model (no PLUG training) for the PLUG format with an
            instruction and worked examples before each conversation (needs --target; English pivot);
            the pivot is split off as for a PLUG model
        target: prompted PLUG: the target language code
        shots: prompted PLUG: worked examples in the prompt
        examples: prompted PLUG: file of worked examples (default: the shipped sample's)
    """
    import uvicorn

    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    backend_args = dict(name=name, pivot=pivot, system=system, client_system=client_system,
                        max_new_tokens=max_new_tokens, temperature=temperature)
    check_settings(pivot, client_system)
    if prompted != bool(target):
        raise UserError("--prompted needs --target CODE" if prompted else
                        "--target is for --prompted (a PLUG GGUF's target language is in its metadata)")
    if prompted:
        backend_args["prompted"] = PromptedPlug.build(target, "en", shots=shots, examples=examples)
    sock = bind(host, port)  # a taken port is reported before the model loads
    engine = LlamaEngine(model, options)
    log = _logger(as_json)
    backend = Backend(engine, on_done=lambda job: log(job_record(job)), **backend_args)
    url = _url(host, sock.getsockname()[1])

    def ready() -> None:
        print(banner(backend, url, api_key=bool(api_key), host=host), file=sys.stderr, flush=True)

    app = create_app(backend, api_key=api_key, cors=cors, log=log, on_ready=ready)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        engine.close()
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run(main, argv, prog="plug-lite serve", positional=("model",), names={"as_json": "--json"},
               choices={"pivot": openai_api.PIVOT_MODES, "client_system": conversation.CLIENT_SYSTEM_RULES},
               extra={"cors": {"metavar": "ORIGIN"}, "api_key": {"metavar": "KEY"}})


if __name__ == "__main__":
    raise SystemExit(cli())
