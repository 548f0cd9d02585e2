"""The HTTP API: OpenAI-compatible completions and chat, health, readiness, metrics."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse

from inference_server import __version__
from inference_server.auth import AuthError, JwtVerifier
from inference_server.engine import BatchingEngine, EngineLimits, Generation, QueueFullError, SamplingParams
from inference_server.loading import LoadedModel
from inference_server.metrics import Metrics
from inference_server import audit
from inference_server.quota import TenantQuotas

log = logging.getLogger("inference_server.api")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_WARMUP_SCOPE_KEY = "inference_server.warmup"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ServerSettings:
    """What the HTTP layer enforces; where the model comes from is the ``load`` callable's business."""

    engine: EngineLimits = EngineLimits()
    max_input_tokens: int = 2048
    max_new_tokens: int = 512
    max_body_bytes: int = 1_000_000
    request_timeout_s: float = 60.0
    grace_period_s: float = 30.0
    auth: JwtVerifier | None = None  # None only when the operator passed --no-auth
    quotas: TenantQuotas | None = None  # per-tenant token buckets (needs auth: the tenant is a JWT claim)


# --------------------------------------------------------------------------- schemas


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we ignore (user, seed, ...)

    model: str
    max_tokens: int | None = Field(default=None, ge=1, description="Tokens to generate at most.")
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = Field(default=None, description="Up to 4 stop strings.")
    n: Literal[1] = Field(default=1, description="Only one choice per request is supported.")
    stream: bool = False

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(s for s in stops if s)[:4]


class CompletionRequest(_Request):
    prompt: str | list[str] = Field(description="The prompt (a single string, or a list of exactly one).")


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "platform"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.headers = headers or {}


def _error_response(error: ApiError) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=error.message, type=error.kind, param=error.param, code=error.code))
    return JSONResponse(body.model_dump(), status_code=error.status, headers=error.headers)


_ERRORS = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        401: "Missing or invalid bearer token",
        404: "Unknown model",
        413: "Request body too large",
        422: "Invalid request, or over a token limit",
        403: "The token names no tenant (the configured claim is missing)",
        429: "Queue full, or the tenant's quota is used up; retry after Retry-After seconds",
        503: "Not ready (loading, warming up or draining)",
        504: "Generation did not finish within the request timeout",
    }.items()
}


# --------------------------------------------------------------------------- state


class ServerState:
    """Readiness: loading → warming up → ready → draining (or failed)."""

    def __init__(self) -> None:
        self.phase = "loading model"
        self.loaded: LoadedModel | None = None
        self.engine: BatchingEngine | None = None
        self.failure: str | None = None
        self.draining = False

    @property
    def ready(self) -> bool:
        return self.phase == "ready" and not self.draining and self.failure is None

    @property
    def reason(self) -> str:
        if self.failure:
            return f"failed: {self.failure}"
        return "draining" if self.draining else self.phase


class BodyLimit:
    """ASGI middleware: refuse bodies over the limit with 413, whether or not they declare a length."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = ApiError(413, f"request body exceeds {self.max_bytes} bytes", "invalid_request_error",
                             "body_too_large")  # fmt: skip
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _error_response(too_large)(scope, receive, send)
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _error_response(too_large)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class RequestContext:
    """ASGI middleware: request id (X-Request-ID in and out), latency metric, one JSON log line.

    Pure ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware costs
    a task and a stream per request, which shows in throughput.
    """

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.monotonic()
        status = 500

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            elapsed = time.monotonic() - started
            self.metrics.request_latency.labels(route=route, status=str(status)).observe(elapsed)
            if scope.get("path", "").startswith("/v1/") and not scope.get(_WARMUP_SCOPE_KEY):
                peer = (scope.get("client") or (None,))[0]
                audit.emit(audit.event(request_id=request_id, route=route, status=status, duration_s=elapsed,
                                       headers=headers, peer=peer, state=scope.get("state") or {}))  # fmt: skip
            log.info("request", extra={"method": scope.get("method"), "route": route, "status": status,
                                       "duration_ms": round(elapsed * 1000, 1)})  # fmt: skip
            request_id_var.reset(token)


# --------------------------------------------------------------------------- app


def create_app(settings: ServerSettings, load: Callable[[], LoadedModel],
               on_fatal: Callable[[str], None] = lambda reason: None) -> FastAPI:  # fmt: skip
    """The ASGI app. ``load`` verifies and loads the model (run off the event loop)."""
    metrics = Metrics()
    state = ServerState()
    created = int(time.time())

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        task = loop.create_task(_start(loop))
        yield
        task.cancel()
        if state.engine is not None:
            await asyncio.to_thread(state.engine.stop, settings.grace_period_s)

    async def _start(loop: asyncio.AbstractEventLoop) -> None:
        try:
            loaded = await asyncio.to_thread(load)
            metrics.model_load_seconds.set(loaded.load_seconds)
            state.loaded = loaded
            engine = BatchingEngine(loaded.model, loaded.tokenizer, settings.engine, metrics)
            engine.start()
            state.engine = engine
            state.phase = "warming up"
            # One real generation through the whole path: the first user request must not
            # pay for lazy initialisation (kernels, allocator, tokenizer caches).
            warm = Generation(prompt_ids=loaded.tokenizer("warm up")["input_ids"], max_new_tokens=4,
                              sampling=SamplingParams(0.0, 1.0), stop=(), loop=loop)  # fmt: skip
            engine.submit(warm)
            while (await warm.events.get())[0] == "text":
                pass
            await _warm_http(loaded)
            # Move everything alive now (model, tokenizer, framework) out of the garbage
            # collector's sight: full collections otherwise rescan it all and stall the
            # engine mid-batch (measured: c=32 P99 ~430 ms -> ~160 ms, docs/benchmarks.md).
            gc.collect()
            gc.freeze()
            state.phase = "ready"
            log.info("ready", extra={"model_id": loaded.model_id, "device": loaded.device})
        except Exception as exc:  # noqa: BLE001 - the server must not serve a model it could not verify
            state.failure = str(exc)
            log.error("start-up failed: %s", exc)
            on_fatal(str(exc))

    async def _warm_http(loaded: LoadedModel) -> None:
        """Send one completion and one streamed chat through the full ASGI stack, in-process,
        so the first real request pays no first-use costs (route setup, validators, encoders)."""
        import httpx

        async def internal(scope: dict, receive: Callable, send: Callable) -> None:
            scope[_WARMUP_SCOPE_KEY] = True  # an ASGI scope key: no HTTP client can set it
            await app(scope, receive, send)

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=internal), base_url="http://warm-up") as http:
            response = await http.post("/v1/completions", json={"model": loaded.model_id, "prompt": "warm up",
                                                                "max_tokens": 4, "temperature": 0})  # fmt: skip
            response.raise_for_status()
            async with http.stream("POST", "/v1/chat/completions", json={
                "model": loaded.model_id, "messages": [{"role": "user", "content": "warm up"}], "max_tokens": 4,
                "stream": True, "temperature": 0,
            }) as streamed:  # fmt: skip
                streamed.raise_for_status()
                async for _ in streamed.aiter_lines():
                    pass

    app = FastAPI(
        title="Inference server",
        version=__version__,
        description="OpenAI-compatible completions and chat over a batched, streaming engine.",
        lifespan=lifespan,
    )
    app.state.server = state
    app.state.metrics = metrics

    def openapi() -> dict:
        """FastAPI's document, plus what is only known at run time: the served model id and
        the token limits, so the document says exactly what the server accepts."""
        if app.openapi_schema is not None and (state.loaded is None or app.state.openapi_for is state.loaded):
            return app.openapi_schema
        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        if state.loaded is not None:
            schemas = document["components"]["schemas"]
            for name in ("CompletionRequest", "ChatCompletionRequest"):
                properties = schemas[name]["properties"]
                properties["model"]["enum"] = [state.loaded.model_id]
                for field in ("max_tokens", "max_completion_tokens"):
                    for branch in properties.get(field, {}).get("anyOf", []):
                        if branch.get("type") == "integer":
                            branch["maximum"] = settings.max_new_tokens
            app.state.openapi_for = state.loaded
        app.openapi_schema = document
        return document

    app.state.openapi_for = None
    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    app.add_middleware(RequestContext, metrics=metrics)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        if error.code:
            metrics.rejected.labels(reason=error.code).inc()
        return _error_response(error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"] if p != "body")
        metrics.rejected.labels(reason="invalid_request").inc()
        return _error_response(ApiError(422, f"{field}: {first['msg']}", "invalid_request_error",
                                        "invalid_request", param=field or None))  # fmt: skip

    def authorize(request: Request) -> None:
        if settings.auth is None or request.scope.get(_WARMUP_SCOPE_KEY):
            return
        try:
            claims = settings.auth.verify(request.headers.get("authorization"))
        except AuthError as exc:
            raise ApiError(401, str(exc), "authentication_error", "unauthorized",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from exc  # fmt: skip
        subject = claims.get("sub")
        request.state.subject = subject if isinstance(subject, str) else None
        quotas = settings.quotas
        if quotas is None:
            return
        tenant = quotas.tenant(claims)
        if tenant is None:
            raise ApiError(403, f"the token has no {quotas.claim!r} claim naming its tenant", "permission_error",
                           "no_tenant")  # fmt: skip
        request.state.tenant = tenant
        retry_after = quotas.check(tenant)
        if retry_after:
            limit = quotas.limit(tenant)
            raise ApiError(429, f"tenant {tenant!r} is over its quota ({limit.per_minute} requests a minute, burst "
                           f"{limit.burst})", "rate_limit_error", "tenant_quota",
                           headers={"Retry-After": str(retry_after)})  # fmt: skip

    def ready_loaded(request: Request) -> LoadedModel:
        warming = state.phase == "warming up" and request.scope.get(_WARMUP_SCOPE_KEY)
        if (not state.ready and not warming) or state.loaded is None:
            raise ApiError(503, f"not ready: {state.reason}", "service_unavailable", "not_ready",
                           headers={"Retry-After": "5"})  # fmt: skip
        return state.loaded

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        """Liveness: the process answers and the engine thread (once started) is alive."""
        if state.failure or (state.engine is not None and not state.engine.alive):
            return JSONResponse({"status": "unhealthy", "reason": state.reason}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        """Ready only once the model is verified, loaded and warmed up, and not while draining."""
        if state.ready:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "reason": state.reason}, status_code=503)

    @app.get("/metrics", tags=["operations"])
    async def metrics_endpoint() -> Response:
        metrics.refresh_gpu_memory()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", response_model=ModelList, responses=_ERRORS, dependencies=[Depends(authorize)])
    async def list_models(request: Request) -> ModelList:
        loaded = ready_loaded(request)
        return ModelList(data=[ModelCard(id=loaded.model_id, created=created)])

    async def _generate(body: _Request, prompt_ids: list[int], loaded: LoadedModel) -> Generation:
        if not prompt_ids:  # an empty prompt: generate from the beginning-of-sequence token
            if loaded.tokenizer.bos_token_id is None:
                raise ApiError(422, "prompt is empty and the model has no beginning-of-sequence token",
                               "invalid_request_error", "empty_prompt", param="prompt")  # fmt: skip
            prompt_ids = [loaded.tokenizer.bos_token_id]
        if body.model != loaded.model_id:
            raise ApiError(404, f"model {body.model!r} is not served here (serving {loaded.model_id!r})",
                           "invalid_request_error", "model_not_found", param="model")  # fmt: skip
        if len(prompt_ids) > settings.max_input_tokens:
            raise ApiError(422, f"prompt has {len(prompt_ids)} tokens; the limit is {settings.max_input_tokens}",
                           "invalid_request_error", "prompt_too_long", param="prompt")  # fmt: skip
        wanted = getattr(body, "max_completion_tokens", None) or body.max_tokens or 16
        if wanted > settings.max_new_tokens:
            raise ApiError(422, f"max_tokens {wanted} exceeds the limit of {settings.max_new_tokens}",
                           "invalid_request_error", "max_tokens_too_large", param="max_tokens")  # fmt: skip
        generation = Generation(
            prompt_ids=prompt_ids, max_new_tokens=wanted, sampling=SamplingParams(body.temperature, body.top_p),
            stop=body.stops(), loop=asyncio.get_running_loop(), stream=body.stream,
        )  # fmt: skip
        try:
            assert state.engine is not None
            state.engine.submit(generation)
        except QueueFullError as exc:
            raise ApiError(429, f"server busy: {exc}", "rate_limit_error", "queue_full",
                           headers={"Retry-After": "1"}) from exc  # fmt: skip
        metrics.tokens_in.inc(len(prompt_ids))
        return generation

    async def _collect(generation: Generation) -> tuple[str, str, int, int]:
        parts: list[str] = []

        async def drain() -> tuple[str, int, int]:
            while True:
                kind, *payload = await generation.events.get()
                if kind == "text":
                    parts.append(payload[0])
                elif kind == "done":
                    return payload[0], payload[1], payload[2]
                else:
                    raise ApiError(500, payload[0], "server_error", "generation_failed")

        try:
            reason, prompt_tokens, completion_tokens = await asyncio.wait_for(drain(), settings.request_timeout_s)
        except TimeoutError as exc:
            raise ApiError(504, f"generation did not finish within {settings.request_timeout_s:g} s",
                           "timeout", "timeout") from exc  # fmt: skip
        finally:
            generation.cancelled.set()  # no-op when finished; frees the batch row otherwise
        return "".join(parts), reason, prompt_tokens, completion_tokens

    def _stream(generation: Generation, chunk: Callable[[str | None, str | None], dict]) -> EventSourceResponse:
        async def events() -> AsyncIterator[str]:
            deadline = time.monotonic() + settings.request_timeout_s
            try:
                first = chunk(None, None)
                if first:
                    yield json.dumps(first)
                while True:
                    try:
                        kind, *payload = await asyncio.wait_for(generation.events.get(), deadline - time.monotonic())
                    except TimeoutError:
                        error = ErrorBody(message="generation timed out", type="timeout", code="timeout")
                        yield json.dumps({"error": error.model_dump()})
                        break
                    if kind == "text":
                        yield json.dumps(chunk(payload[0], None))
                    elif kind == "done":
                        yield json.dumps(chunk(None, _finish_reason(payload[0])))
                        break
                    else:
                        yield json.dumps({"error": ErrorBody(message=payload[0], type="server_error").model_dump()})
                        break
                yield "[DONE]"
            finally:
                generation.cancelled.set()  # the client left or we are done: free the row

        return EventSourceResponse(events(), sep="\n", ping=15)

    @app.post("/v1/completions", response_model=CompletionResponse, responses=_ERRORS,
              dependencies=[Depends(authorize)])  # fmt: skip
    async def completions(body: CompletionRequest, request: Request) -> Any:
        loaded = ready_loaded(request)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise ApiError(422, "prompt: exactly one prompt per request is supported", "invalid_request_error",
                           "invalid_request", param="prompt")  # fmt: skip
        prompt_ids = loaded.tokenizer(prompts[0])["input_ids"]
        generation = await _generate(body, prompt_ids, loaded)
        request.state.generation, request.state.model = generation, loaded.model_id  # audit: counts, not text
        request_id = f"cmpl-{uuid.uuid4().hex}"
        now = int(time.time())
        if body.stream:
            return _stream(generation, lambda text, finish: {
                "id": request_id, "object": "text_completion", "created": now, "model": loaded.model_id,
                "choices": [{"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}],
            } if text is not None or finish is not None else {})  # fmt: skip
        text, reason, prompt_tokens, completion_tokens = await _collect(generation)
        return CompletionResponse(
            id=request_id, created=now, model=loaded.model_id,
            choices=[CompletionChoice(text=text, finish_reason=_finish_reason(reason))],
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                        total_tokens=prompt_tokens + completion_tokens),
        )  # fmt: skip

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses=_ERRORS,
              dependencies=[Depends(authorize)])  # fmt: skip
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        loaded = ready_loaded(request)
        messages = [m.model_dump() for m in body.messages]
        prompt_ids = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "keys"):
            prompt_ids = prompt_ids["input_ids"]
        generation = await _generate(body, list(prompt_ids), loaded)
        request.state.generation, request.state.model = generation, loaded.model_id  # audit: counts, not text
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        now = int(time.time())
        if body.stream:
            def chunk(text: str | None, finish: str | None) -> dict:
                delta: dict[str, str] = {}
                if text is None and finish is None:
                    delta = {"role": "assistant", "content": ""}
                elif text is not None:
                    delta = {"content": text}
                return {"id": request_id, "object": "chat.completion.chunk", "created": now, "model": loaded.model_id,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip

            return _stream(generation, chunk)
        text, reason, prompt_tokens, completion_tokens = await _collect(generation)
        return ChatCompletionResponse(
            id=request_id, created=now, model=loaded.model_id,
            choices=[ChatChoice(message=AssistantMessage(content=text), finish_reason=_finish_reason(reason))],
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                        total_tokens=prompt_tokens + completion_tokens),
        )  # fmt: skip

    return app


def _finish_reason(reason: str) -> str:
    return {"stop": "stop", "length": "length"}.get(reason, "stop")


def drain(app: FastAPI) -> None:
    """Turn not-ready (SIGTERM): load balancers stop sending while in-flight requests finish."""
    app.state.server.draining = True


