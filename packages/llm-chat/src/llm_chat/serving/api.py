"""The OpenAI-compatible HTTP API over an `Engine`: /v1/chat/completions (streaming or not), /v1/models,
/health. `create_app(engine, settings)` wires the route functions below; each reads the engine and the
settings from `request.app.state`. The web UI is mounted on top of this app by `server.build_app`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from .engine import Engine, GenRequest, Job
from .schema import ApiError, ChatCompletionRequest, QueueFull, ServeSettings, api_error_from

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Reading and validating a request
# ----------------------------------------------------------------------------------------------------------
async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, refusing bodies over `limit` bytes before reading them whole."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid Content-Length header")
        if int(declared) > limit:
            raise ApiError(
                413, f"request body is {declared} bytes; the limit is {limit}", code="request_too_large"
            )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body exceeds {limit} bytes", code="request_too_large")
    if not body:
        raise ApiError(400, "the request body is empty; send a JSON object")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}", code="invalid_json") from None
    except RecursionError:  # e.g. 100k nested brackets: valid JSON in theory, a stack bomb in practice
        raise ApiError(400, "request body is nested too deeply", code="invalid_json") from None


def build_request(
    engine: Engine, payload: Any, settings: ServeSettings
) -> tuple[ChatCompletionRequest, GenRequest]:
    """Validate a parsed JSON body and turn it into a GenRequest (ApiError 4xx on any problem)."""
    if not isinstance(payload, dict):
        raise ApiError(400, "request body must be a JSON object")
    msgs = payload.get("messages")
    if isinstance(msgs, list) and len(msgs) > settings.max_messages:
        raise ApiError(
            400,
            f"{len(msgs)} messages; the limit is {settings.max_messages}",
            param="messages",
            code="too_many_messages",
        )
    try:
        # Strict: JSON types as OpenAI documents them (no "yes" for a bool, no true for an int).
        body = ChatCompletionRequest.model_validate(payload, strict=True)
    except ValidationError as e:
        raise api_error_from(e) from None
    adapter = engine.resolve(body.model)
    asked = body.max_completion_tokens or body.max_tokens
    if asked is not None and asked > settings.max_tokens_limit:
        raise ApiError(
            400,
            f"max_tokens is {asked}; this server allows at most {settings.max_tokens_limit}",
            param="max_tokens",
            code="invalid_value",
        )
    messages = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages
    ]
    prompt = engine.encode_chat(messages)
    room = engine.context_length - len(prompt)
    if room < 1:
        raise ApiError(
            400,
            f"the prompt is {len(prompt)} tokens; the model's context is {engine.context_length}",
            param="messages",
            code="context_length_exceeded",
        )
    if asked is not None and asked > room:
        raise ApiError(
            400,
            f"prompt ({len(prompt)} tokens) + max_tokens ({asked}) exceeds the context ({engine.context_length})",
            param="max_tokens",
            code="context_length_exceeded",
        )
    max_tokens = asked if asked is not None else min(settings.default_max_tokens, room)
    temperature = 1.0 if body.temperature is None else body.temperature
    top_p = 1.0 if body.top_p is None else body.top_p
    return body, GenRequest(prompt, adapter, max_tokens, temperature, top_p, list(body.stop or []), body.seed)


def check_key(request: Request) -> None:
    """401 unless the request carries the server's API key (when one is set)."""
    api_key = request.app.state.settings.api_key
    if not api_key:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise ApiError(
            401, "Incorrect or missing API key; send `Authorization: Bearer <key>`", code="invalid_api_key"
        )


# ----------------------------------------------------------------------------------------------------------
# Routes
# ----------------------------------------------------------------------------------------------------------
async def health(request: Request):
    engine: Engine = request.app.state.engine
    if not engine.alive():
        return JSONResponse({"status": "down", "reason": "generation worker stopped"}, status_code=503)
    return {
        "status": "ok",
        "queue": engine.queue_depth(),
        "in_flight": engine.in_flight,
        "max_queue": engine.max_queue,
        "served": dict(engine.stats),
    }


def model_card(engine: Engine, mid: str) -> dict:
    card = {"id": mid, "object": "model", "created": int(engine.started), "owned_by": "llm-chat"}
    if mid != engine.base_name:
        card["parent"] = engine.base_name
    return card


async def list_models(request: Request):
    check_key(request)
    engine: Engine = request.app.state.engine
    return {"object": "list", "data": [model_card(engine, m) for m in engine.model_ids()]}


async def get_model(model_id: str, request: Request):
    check_key(request)
    engine: Engine = request.app.state.engine
    engine.resolve(model_id)
    return model_card(engine, model_id)


async def chat_completions(request: Request):
    check_key(request)
    engine: Engine = request.app.state.engine
    settings: ServeSettings = request.app.state.settings
    payload = await read_json(request, settings.max_request_bytes)
    body, req = build_request(engine, payload, settings)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def sink(ev: tuple) -> None:  # called on the worker thread
        loop.call_soon_threadsafe(events.put_nowait, ev)

    try:
        job = engine.submit(req, sink)
    except QueueFull as e:
        raise ApiError(
            429,
            f"The server is busy ({e}); retry shortly",
            type="rate_limit_error",
            code="rate_limit_exceeded",
        ) from None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            sse_events(job, body.model, events, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await complete(job, body.model, events, request)


# ----------------------------------------------------------------------------------------------------------
# Answers: one JSON body, or server-sent events
# ----------------------------------------------------------------------------------------------------------
def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _server_error(message: str) -> dict:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}


async def complete(job: Job, model: str, events: asyncio.Queue, request: Request) -> Any:
    """The whole answer as one chat.completion body (cancels generation if the client goes away)."""

    async def watch_disconnect() -> None:
        # Poll, because deltas keep arriving: a client that gave up must not keep the model busy.
        while not await request.is_disconnected():
            await asyncio.sleep(0.25)
        job.cancel.set()

    watcher = asyncio.create_task(watch_disconnect())
    parts: list[str] = []
    try:
        while True:
            ev = await events.get()
            if ev[0] == "delta":
                parts.append(ev[1])
            elif ev[0] == "error":
                return JSONResponse(
                    _server_error(ev[1]), status_code=503 if "shutting down" in ev[1] else 500
                )
            else:
                _, reason, usage = ev
                break
    finally:
        watcher.cancel()
        job.cancel.set()  # harmless when finished; stops generation if this handler was cancelled
    return {
        "id": job.id,
        "object": "chat.completion",
        "created": job.created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(parts), "refusal": None},
                "logprobs": None,
                "finish_reason": _finish(reason),
            }
        ],
        "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
    }


async def sse_events(job: Job, model: str, events: asyncio.Queue, include_usage: bool):
    """chat.completion.chunk events, then `data: [DONE]` (cancels generation when the client leaves)."""

    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None, choices: bool = True) -> str:
        obj = {
            "id": job.id,
            "object": "chat.completion.chunk",
            "created": job.created,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            if choices
            else [],
        }
        if usage is not None:
            obj["usage"] = usage
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            ev = await events.get()
            if ev[0] == "delta":
                yield chunk({"content": ev[1]})
            elif ev[0] == "error":
                yield f"data: {json.dumps(_server_error(ev[1]))}\n\n"
                break
            else:
                _, reason, usage = ev
                yield chunk({}, _finish(reason))
                if include_usage:
                    total = usage["prompt_tokens"] + usage["completion_tokens"]
                    yield chunk({}, usage={**usage, "total_tokens": total}, choices=False)
                break
        yield "data: [DONE]\n\n"
    finally:
        # Reached on normal end and when Starlette cancels us because the client disconnected.
        job.cancel.set()


# ----------------------------------------------------------------------------------------------------------
# Error handlers and the app
# ----------------------------------------------------------------------------------------------------------
def _error_response(err: ApiError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def on_api_error(request: Request, exc: ApiError):
    return _error_response(exc, {"Retry-After": "1"} if exc.status == 429 else None)


async def on_http_error(request: Request, exc):
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return _error_response(ApiError(exc.status_code, str(exc.detail), code=kind))


async def on_validation_error(request: Request, exc: RequestValidationError):
    return _error_response(ApiError(400, f"invalid request: {exc.errors()[:1]}"))


async def on_internal_error(request: Request, exc: Exception):
    # A bug: still answer in the API's error format, and log it.
    logger.exception("unhandled error on %s", request.url.path)
    return JSONResponse(_server_error("internal server error"), status_code=500)


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving `engine`: /v1/chat/completions, /v1/models, /health (API only, no UI)."""
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="llm-chat", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.settings = engine, settings or ServeSettings()
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_internal_error)
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/v1/models/{model_id:path}", get_model, methods=["GET"])
    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    return app
