"""OpenAI-compatible chat API (`llm-chat serve`): FastAPI + uvicorn around one model and its LoRA adapters.

Layout, top to bottom:
- `ServeSettings` and `ApiError`: limits, the API key, and OpenAI-style error bodies.
- Request schema (pydantic): what `POST /v1/chat/completions` accepts; anything else is a 400, never a 500.
- `Engine`: owns (model, tokenizer) and ONE worker thread. Requests wait in a bounded queue (full -> 429);
  the worker takes the oldest request plus any queued ones with the same adapter and sampling settings and
  runs them as one left-padded `generate` batch. A per-row `StoppingCriteria` streams each row's new text,
  applies per-request `max_tokens`/`stop`, and stops rows whose client went away (cancel flag).
- `create_app(engine, settings)`: the FastAPI app (chat completions, models, health; optional web UI).
- `serve(cfg)`: the CLI entry; `ServerThread` and `run_load` for tests and the benchmark.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import queue
import socket
import statistics
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

logger = logging.getLogger(__name__)

API_KEY_ENV = "LLM_CHAT_API_KEY"


# ----------------------------------------------------------------------------------------------------------
# Settings and errors
# ----------------------------------------------------------------------------------------------------------
@dataclass
class ServeSettings:
    """Limits and security knobs of the HTTP layer (filled from the CLI's ServeArgs by `settings_from`)."""

    api_key: str | None = None  # when set, every /v1 route needs `Authorization: Bearer <key>`
    max_queue: int = 64  # requests waiting for the model; one more gets 429
    max_tokens_limit: int = 2048  # largest max_tokens a request may ask for
    default_max_tokens: int = 256  # when the request does not say
    max_messages: int = 128  # messages per request
    max_request_bytes: int = 1_000_000  # request body size; larger -> 413
    max_batch_size: int = 8  # concurrent requests generated together in one batch
    ui_path: str | None = None  # mount the Gradio web UI here (e.g. "/ui"); None: API only


class ApiError(Exception):
    """An error the client caused (or a full queue): becomes an OpenAI-style JSON error body."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class QueueFull(Exception):
    """The engine's waiting queue is at max_queue."""


# ----------------------------------------------------------------------------------------------------------
# Request schema (the subset of OpenAI's chat completions API we implement)
# ----------------------------------------------------------------------------------------------------------
class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    # Clients echo assistant messages back with extra keys (refusal, annotations...): ignore them.
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions. Unknown fields are rejected (as OpenAI does) rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    # Accepted only at their neutral values, so clients that always send them keep working.
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, v):
        if v not in (None, 1):
            raise ValueError("only n=1 is supported")
        return v

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty")
        return stops

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, v):
        if v not in (None, 0, 0.0):
            raise ValueError("penalties are not supported (use 0 or omit)")
        return v

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v):
        if v:
            raise ValueError("logprobs are not supported")
        return v


def _validation_error(e: ValidationError) -> ApiError:
    err = e.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    param = ".".join(loc) or None
    if err.get("type") == "extra_forbidden":
        return ApiError(400, f"Unrecognized request argument supplied: {param}", param=param)
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    return ApiError(400, f"Invalid value for '{param}': {msg}", param=param, code="invalid_value")


# ----------------------------------------------------------------------------------------------------------
# Engine: one model, one worker thread, a bounded queue, batched generation
# ----------------------------------------------------------------------------------------------------------
@dataclass
class GenRequest:
    """One generation, already tokenised and validated."""

    prompt_ids: list[int]
    adapter: str | None  # None = base model (adapters disabled)
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    def batch_key(self) -> tuple:
        # Rows of one `generate` call share the adapter (temperature/top_p are applied per row); a seeded
        # request runs alone so its seed means something.
        return (self.adapter, self.seed if self.seed is not None else "*")


@dataclass
class Job:
    """A queued request. `sink` receives ("delta", text), ("end", finish_reason, usage) or ("error", msg)
    from the worker thread; `cancel` is set when the client disconnects."""

    req: GenRequest
    sink: Callable[[tuple], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))
    generated: int = 0  # completion tokens so far (the worker updates it)

    def send(self, ev: tuple) -> None:
        """Deliver an event; a consumer that is gone (closed event loop) just cancels the job."""
        try:
            self.sink(ev)
        except Exception:
            self.cancel.set()


class _RowState:
    """Per-row incremental detokenisation, stop strings and finish reason.

    Detokenisation uses the prefix/read offsets of TGI/vLLM: decode only the last few tokens and take the
    text they add, so each step costs O(1) rather than re-decoding the whole answer, and SentencePiece
    leading spaces and multi-token UTF-8 characters come out right.
    """

    def __init__(self, job: Job, tokenizer, eos_ids: set[int]):
        self.job, self.tok, self.eos_ids = job, tokenizer, eos_ids
        self.ids: list[int] = []
        self.text = ""  # decoded text so far (complete characters only)
        self.prefix_off = self.read_off = 0
        self.sent = 0  # characters of `text` already sent to the client
        self.finished: str | None = None  # "stop" | "length" | "cancelled"
        self.stop_string = False  # finished on a stop string: the text after it is never sent

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def push(self, token: int) -> None:
        if self.finished:
            return
        if token in self.eos_ids:
            self.finished = "stop"
            return
        self.ids.append(token)
        self.job.generated = len(self.ids)
        prefix = self._decode(self.ids[self.prefix_off : self.read_off])
        full = self._decode(self.ids[self.prefix_off :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):  # U+FFFD: an incomplete UTF-8 char
            self.text += full[len(prefix) :]
            self.prefix_off, self.read_off = self.read_off, len(self.ids)
        text, stops = self.text, self.job.req.stop
        for s in stops:
            # Only look where a stop string could newly complete (never before what was already sent).
            at = text.find(s, max(0, self.sent - len(s) + 1))
            if at != -1:
                self._emit(text[:at])
                self.finished, self.stop_string = "stop", True
                return
        if len(self.ids) >= self.job.req.max_tokens:
            self.finished = "length"
            return  # flush() sends the rest
        # Hold back a tail that may be the start of a stop string.
        hold = 0
        for s in stops:
            hold = max(
                hold, next((k for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])), 0)
            )
        self._emit(text[: len(text) - hold])

    def _emit(self, text: str) -> None:
        if len(text) > self.sent:
            self.job.send(("delta", text[self.sent :]))
            self.sent = len(text)

    def flush(self) -> None:
        """At the end: send what was held back (an unfinished stop-string prefix, undecodable bytes)."""
        if self.stop_string or self.finished == "cancelled":
            return
        tail = self._decode(self.ids[self.prefix_off :])[
            len(self._decode(self.ids[self.prefix_off : self.read_off])) :
        ]
        self._emit(self.text + tail)


def _make_criteria(rows: list[_RowState], prompt_len: int):
    """A StoppingCriteria that streams every row's new token and says per row whether it is done."""
    import torch
    from transformers import StoppingCriteria

    class RowCriteria(StoppingCriteria):
        def __init__(self):
            self.seen = prompt_len

        def __call__(self, input_ids, scores, **kwargs):
            new = input_ids[:, self.seen :].tolist()
            self.seen = input_ids.shape[1]
            done = []
            for row, toks in zip(rows, new):
                for t in toks:
                    row.push(t)
                if not row.finished and row.job.cancel.is_set():
                    row.finished = "cancelled"
                done.append(row.finished is not None)
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return RowCriteria()


def _row_sampling(reqs: list[GenRequest]):
    """A LogitsProcessor applying each row's own temperature and top-p (greedy rows keep only their argmax),
    so requests with different sampling settings share one batch. Mirrors transformers' TopPLogitsWarper."""
    import torch
    from transformers import LogitsProcessor

    temps = torch.tensor([[r.temperature if r.temperature > 0 else 1.0] for r in reqs])
    top_ps = torch.tensor([[r.top_p] for r in reqs])
    greedy = torch.tensor([[r.temperature <= 0] for r in reqs])

    class RowSampling(LogitsProcessor):
        def __call__(self, input_ids, scores):
            dev = scores.device
            scores = scores / temps.to(dev, scores.dtype)
            sorted_scores, order = torch.sort(scores, descending=False)
            cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
            drop_sorted = cum <= (1 - top_ps.to(dev, cum.dtype))
            drop_sorted[:, -1] = False  # always keep the most likely token
            drop = drop_sorted.scatter(1, order, drop_sorted)
            scores = scores.masked_fill(drop, -float("inf"))
            best = torch.full_like(scores, -float("inf")).scatter(1, scores.argmax(dim=-1, keepdim=True), 0.0)
            return torch.where(greedy.to(dev), best, scores)

    return RowSampling()


class Engine:
    """Owns (model, tokenizer); serialises all generation on one worker thread.

    Args:
        model: a causal LM, optionally a peft `PeftModel` with one or more adapters loaded.
        tokenizer: its tokenizer (with a chat template).
        base_name: the id clients use for the plain base model.
        max_queue: waiting requests before `submit` raises `QueueFull`.
        max_batch_size: requests generated together in one batch.
    """

    def __init__(self, model, tokenizer, *, base_name: str, max_queue: int = 64, max_batch_size: int = 8):
        self.model, self.tokenizer = model, tokenizer
        self.base_name = base_name
        self.adapters = _adapter_names(model)
        if base_name in self.adapters:
            raise ValueError(f"adapter name {base_name!r} clashes with the base model's name")
        self.max_queue, self.max_batch_size = max_queue, max(1, max_batch_size)
        self.device = next(model.parameters()).device
        self.context_length = _context_length(model, tokenizer)
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self._pending: deque[Job] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._active_adapter: str | None = None
        self._running: list[Job] = []  # the batch being generated (close() cancels it)
        self.in_flight = 0
        self.stats = {"requests": 0, "completion_tokens": 0, "batches": 0, "max_batch": 0, "cancelled": 0}
        self.started = time.time()
        model.eval()
        self._thread = threading.Thread(target=self._worker, name="llm-chat-engine", daemon=True)
        self._thread.start()

    # -- what clients can ask for -------------------------------------------------------------------------
    def model_ids(self) -> list[str]:
        return [self.base_name, *self.adapters]

    def resolve(self, model_id: str) -> str | None:
        """Request `model` -> adapter name, or None for the base model. Unknown ids raise ApiError 404."""
        if model_id == self.base_name:
            return None
        if model_id in self.adapters:
            return model_id
        raise ApiError(
            404,
            f"The model '{model_id}' does not exist; available: {', '.join(self.model_ids())}",
            param="model",
            code="model_not_found",
        )

    def encode_chat(self, messages: list[dict]) -> list[int]:
        """Chat messages -> prompt token ids via the tokenizer's chat template."""
        try:
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        except Exception as e:  # jinja raises for conversations its template refuses (role order, ...)
            raise ApiError(400, f"messages: the chat template rejected them: {e}", param="messages") from None
        if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        if ids and isinstance(ids[0], list):
            ids = ids[0]
        return list(ids)

    def alive(self) -> bool:
        """Whether the worker thread is still taking requests."""
        return self._thread.is_alive() and not self._stopping

    def queue_depth(self) -> int:
        return len(self._pending)

    # -- submitting ---------------------------------------------------------------------------------------
    def submit(self, req: GenRequest, sink: Callable[[tuple], None]) -> Job:
        """Queue a generation; raises QueueFull when max_queue requests are already waiting."""
        job = Job(req, sink)
        with self._cv:
            if self._stopping:
                raise QueueFull("server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests already waiting")
            self._pending.append(job)
            self._cv.notify()
        return job

    def stream(self, req: GenRequest, cancel: threading.Event | None = None) -> Iterator[tuple]:
        """Blocking iterator over one generation's events (for the web UI and scripts)."""
        events: queue.Queue = queue.Queue()
        job = self.submit(req, events.put)
        try:
            while True:
                ev = events.get()
                yield ev
                if ev[0] in ("end", "error"):
                    return
                if cancel is not None and cancel.is_set():
                    job.cancel.set()
        finally:
            job.cancel.set()  # the consumer stopped early (generator closed): stop generating

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker: waiting jobs end with an error, the running batch is cancelled."""
        with self._cv:
            self._stopping = True
            dropped = list(self._pending)
            self._pending.clear()
            self._cv.notify_all()
        for job in self._running:
            job.cancel.set()
        for job in dropped:
            job.send(("error", "server is shutting down"))
        self._thread.join(timeout)

    # -- the worker ---------------------------------------------------------------------------------------
    def _take_batch(self) -> list[Job] | None:
        with self._cv:
            while not self._pending and not self._stopping:
                self._cv.wait()
            if self._stopping:
                return None
            first = self._pending.popleft()
            batch, key = [first], first.req.batch_key()
            for job in list(self._pending):
                if len(batch) >= self.max_batch_size:
                    break
                if job.req.batch_key() == key and job.req.seed is None:
                    self._pending.remove(job)
                    batch.append(job)
            self.in_flight, self._running = len(batch), batch
            return batch

    def _worker(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            batch = [j for j in batch if not self._skip_cancelled(j)]
            try:
                if batch:
                    self._generate(batch)
            except Exception as e:  # a bug or OOM must not kill the worker: fail these requests only
                logger.exception("generation failed")
                for job in batch:
                    job.send(("error", f"generation failed: {type(e).__name__}: {e}"))
            finally:
                self.in_flight, self._running = 0, []

    def _skip_cancelled(self, job: Job) -> bool:
        if job.cancel.is_set():  # the client left while queued
            self.stats["cancelled"] += 1
            job.send(("end", "cancelled", {"prompt_tokens": len(job.req.prompt_ids), "completion_tokens": 0}))
            return True
        return False

    def _select_adapter(self, adapter: str | None):
        """Activate `adapter` (peft set_adapter) or return the context that disables adapters for the base."""
        import contextlib

        if adapter is None:
            if self.adapters:
                return self.model.disable_adapter()
            return contextlib.nullcontext()
        if adapter != self._active_adapter:
            self.model.set_adapter(adapter)
            self._active_adapter = adapter
        return contextlib.nullcontext()

    def _generate(self, batch: list[Job]) -> None:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        req0 = batch[0].req
        width = max(len(j.req.prompt_ids) for j in batch)
        # Left padding: every row's next token lands in the same column.
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for i, job in enumerate(batch):
            ids = job.req.prompt_ids
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[i, width - len(ids) :] = 1
        rows = [_RowState(job, self.tokenizer, self.eos_ids) for job in batch]
        sampling = any(j.req.temperature > 0 for j in batch)
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(j.req.max_tokens for j in batch),
            "do_sample": sampling,
            "pad_token_id": self.pad_id,
            "eos_token_id": sorted(self.eos_ids),
            "stopping_criteria": StoppingCriteriaList([_make_criteria(rows, width)]),
        }
        if sampling:
            # OpenAI semantics: per-row temperature + nucleus (RowSampling), nothing else. top_k=0 turns
            # top-k off (None would mean transformers' default of 50).
            kwargs.update(
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                logits_processor=LogitsProcessorList([_row_sampling([j.req for j in batch])]),
            )
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if req0.seed is not None:
            torch.manual_seed(req0.seed)
        self.stats["batches"] += 1
        self.stats["max_batch"] = max(self.stats["max_batch"], len(batch))
        with self._select_adapter(req0.adapter), torch.inference_mode():
            self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), **kwargs
            )
        for row in rows:
            reason = row.finished or "length"
            if reason == "cancelled":
                self.stats["cancelled"] += 1
            else:
                row.flush()
            usage = {"prompt_tokens": len(row.job.req.prompt_ids), "completion_tokens": len(row.ids)}
            self.stats["requests"] += 1
            self.stats["completion_tokens"] += len(row.ids)
            row.job.send(("end", reason, usage))


def _adapter_names(model) -> list[str]:
    cfg = getattr(model, "peft_config", None)
    return sorted(cfg) if isinstance(cfg, dict) else []


def _context_length(model, tokenizer) -> int:
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    v = getattr(tokenizer, "model_max_length", None)
    return v if isinstance(v, int) and 0 < v < 10**7 else 2048


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        v = getattr(src, "eos_token_id", None)
        ids.update(v if isinstance(v, list | tuple) else [v] if v is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    # ChatML models end a turn with <|im_end|> even when eos is <|endoftext|>.
    for tok in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>"):
        tid = tokenizer.convert_tokens_to_ids(tok) if tok in tokenizer.get_vocab() else None
        if tid is not None:
            ids.add(tid)
    if not ids:
        raise ValueError("the tokenizer has no eos token; cannot tell where an answer ends")
    return ids


# ----------------------------------------------------------------------------------------------------------
# The HTTP app
# ----------------------------------------------------------------------------------------------------------
def _error_response(err: ApiError, headers: dict | None = None):
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def _read_json(request, limit: int) -> Any:
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
        raise _validation_error(e) from None
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


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def create_app(engine: Engine, settings: ServeSettings | None = None):
    """The FastAPI app serving `engine`: /v1/chat/completions, /v1/models, /health (and the UI if asked)."""
    from starlette.exceptions import HTTPException as StarletteHTTPException

    settings = settings or ServeSettings()
    app = FastAPI(title="llm-chat", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.settings = engine, settings

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return _error_response(exc, {"Retry-After": "1"} if exc.status == 429 else None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _error_response(ApiError(exc.status_code, str(exc.detail), code=kind))

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc):
        return _error_response(ApiError(400, f"invalid request: {exc.errors()[:1]}"))

    @app.exception_handler(Exception)
    async def _internal(request, exc):  # a bug: still answer in the API's error format, and log it
        logger.exception("unhandled error on %s", request.url.path)
        return JSONResponse(
            {
                "error": {
                    "message": "internal server error",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
            status_code=500,
        )

    def check_key(request: Request) -> None:
        if not settings.api_key:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), settings.api_key.encode()
        ):
            raise ApiError(
                401,
                "Incorrect or missing API key; send `Authorization: Bearer <key>`",
                code="invalid_api_key",
            )

    @app.get("/health")
    async def health():
        if not engine.alive():
            return JSONResponse({"status": "down", "reason": "generation worker stopped"}, status_code=503)
        return {
            "status": "ok",
            "queue": engine.queue_depth(),
            "in_flight": engine.in_flight,
            "max_queue": engine.max_queue,
            "served": dict(engine.stats),
        }

    def _model_card(mid: str) -> dict:
        card = {"id": mid, "object": "model", "created": int(engine.started), "owned_by": "llm-chat"}
        if mid != engine.base_name:
            card["parent"] = engine.base_name
        return card

    @app.get("/v1/models")
    async def list_models(request: Request):
        check_key(request)
        return {"object": "list", "data": [_model_card(m) for m in engine.model_ids()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request):
        check_key(request)
        engine.resolve(model_id)
        return _model_card(model_id)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        check_key(request)
        payload = await _read_json(request, settings.max_request_bytes)
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
                _sse(job, body.model, events, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await _complete(job, body.model, events, request)

    async def _complete(job: Job, model: str, events: asyncio.Queue, request: Request) -> Any:
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
                        {"error": {"message": ev[1], "type": "server_error", "param": None, "code": None}},
                        status_code=503 if "shutting down" in ev[1] else 500,
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

    async def _sse(job: Job, model: str, events: asyncio.Queue, include_usage: bool):
        def chunk(
            delta: dict, finish: str | None = None, usage: dict | None = None, choices: bool = True
        ) -> str:
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
                    err = {"error": {"message": ev[1], "type": "server_error", "param": None, "code": None}}
                    yield f"data: {json.dumps(err)}\n\n"
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

    if settings.ui_path:
        from .webui import mount_ui

        mount_ui(app, engine, settings.ui_path, api_key=settings.api_key)
    return app


# ----------------------------------------------------------------------------------------------------------
# Running the server: CLI entry, a thread for tests/benchmarks, and a load generator
# ----------------------------------------------------------------------------------------------------------
def settings_from(args: Any) -> ServeSettings:
    """ServeSettings from the CLI's ServeArgs (any object with some of the same attribute names)."""
    s = ServeSettings()
    for name in ("max_queue", "max_tokens_limit", "max_messages", "max_request_bytes", "max_batch_size"):
        v = getattr(args, name, None)
        if v is not None:
            setattr(s, name, int(v))
    s.default_max_tokens = min(int(getattr(args, "default_max_tokens", None) or 256), s.max_tokens_limit)
    s.api_key = getattr(args, "api_key", None) or os.environ.get(API_KEY_ENV) or None
    ui = getattr(args, "ui_path", None)
    s.ui_path = ui or None
    return s


def _serve_args(cfg) -> Any:
    """The ServeArgs group of a parsed CLI config (found by class name, so the CLI may order extras freely)."""
    for group in getattr(cfg, "extra", ()) or ():
        if type(group).__name__ == "ServeArgs":
            return group
    for group in (getattr(cfg, "infer", None), getattr(cfg, "model", None)):
        if group is not None and hasattr(group, "port"):
            return group
    return None


def build_engine(cfg, max_queue: int = 64, max_batch_size: int = 8) -> Engine:
    """Load the base (or the tiny random model) + --adapter_dir + --adapters and wrap them in an Engine."""
    from .model import load_for_cfg

    args = _serve_args(cfg)
    model, tokenizer = load_for_cfg(cfg, list(getattr(args, "adapters", None) or []))
    tune_cpu_threads(model)
    base_name = base_model_id(cfg.model)
    while base_name in _adapter_names(model):  # an adapter dir named like the base: keep both reachable
        base_name += "-base"
    return Engine(model, tokenizer, base_name=base_name, max_queue=max_queue, max_batch_size=max_batch_size)


def base_model_id(model_args) -> str:
    """The id clients use for the base model: the model dir's name, `<run>-base` for a tiny run's saved
    random base, `<type>-random` for a random model built from --model_type."""
    from pathlib import Path

    if getattr(model_args, "model_type", None):
        return f"{model_args.model_type}-random"
    p = Path(str(getattr(model_args, "model_name_or_path", None) or "base"))
    if p.name == "base_model" and p.parent.name:
        return f"{p.parent.name}-base"
    return p.name or "base"


def tune_cpu_threads(model, small_params: int = 50_000_000) -> None:
    """On CPU, run a small model on one intra-op thread unless OMP_NUM_THREADS says otherwise.

    Measured on the contended 2-core dev box: a 2-layer tiny model decodes ~10x slower with two threads
    than with one (thread hand-offs dwarf the math); bigger models keep torch's default.
    """
    import torch

    device = next(model.parameters()).device
    n = sum(p.numel() for p in model.parameters())
    if device.type == "cpu" and n < small_params and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
        logger.info("small model on CPU (%.1fM params): 1 torch thread", n / 1e6)


def _bind_check(host: str, api_key: str | None) -> None:
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "binding %s exposes the model to the network%s",
            host,
            "" if api_key else " without an API key (set --api_key or LLM_CHAT_API_KEY)",
        )


def serve(cfg) -> int:
    """`llm-chat serve`: load the model and adapters, then serve the OpenAI-compatible API with uvicorn."""
    import uvicorn

    args = _serve_args(cfg)
    settings = settings_from(args)
    host = getattr(args, "host", None) or "127.0.0.1"
    port = int(getattr(args, "port", None) or 8000)
    _bind_check(host, settings.api_key)
    engine = build_engine(cfg, settings.max_queue, settings.max_batch_size)
    app = create_app(engine, settings)
    logger.info(
        "serving %s on http://%s:%d/v1 (models: %s; api key %s)",
        engine.base_name,
        host,
        port,
        ", ".join(engine.model_ids()),
        "required" if settings.api_key else "off",
    )
    try:
        uvicorn.run(
            app, host=host, port=port, log_level="info", access_log=False, timeout_graceful_shutdown=5
        )
    finally:
        engine.close()
    return 0


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on `host`."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    """Run an ASGI app with uvicorn in a background thread on loopback (tests, benchmarks, notebooks).

    with ServerThread(app) as base_url: ...   # base_url like http://127.0.0.1:PORT
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None, start_timeout: float = 30.0):
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        config = uvicorn.Config(
            app, host=host, port=self.port, log_level="warning", access_log=False, timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.start_timeout = start_timeout

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _has_text(sse_line: str) -> bool:
    try:
        choices = json.loads(sse_line.removeprefix("data: ")).get("choices") or [{}]
    except json.JSONDecodeError:
        return False
    return bool(choices[0].get("delta", {}).get("content"))


def run_load(
    base_url: str,
    concurrency: int,
    requests_per_client: int,
    *,
    model: str | None = None,
    api_key: str | None = None,
    max_tokens: int = 16,
    prompt: str = "hello, how are you?",
    timeout: float = 120.0,
) -> dict[str, float]:
    """A bounded load test: `concurrency` streaming clients, each sending `requests_per_client` requests.

    A request counts as an error unless it returns 200 and its SSE stream ends with `data: [DONE]`.

    Returns:
        {"rps", "p50_ms", "p95_ms", "ttft_p50_ms", "errors", "requests", "seconds"}: latency is the full
        stream (first byte sent to [DONE]); ttft is time to the first content chunk.
    """
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def main() -> dict[str, float]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, limits=limits
        ) as client:
            mid = model
            if mid is None:
                r = await client.get("/v1/models")
                r.raise_for_status()
                mid = r.json()["data"][0]["id"]
            latencies: list[float] = []
            ttfts: list[float] = []
            errors: list[str] = []

            async def one(i: int) -> None:
                body = {
                    "model": mid,
                    "messages": [{"role": "user", "content": f"{prompt} #{i}"}],
                    "stream": True,
                    "max_tokens": max_tokens,
                    "temperature": 0,
                }
                t0 = time.perf_counter()
                first = None
                try:
                    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                        if r.status_code != 200:
                            errors.append(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
                            return
                        last = ""
                        async for line in r.aiter_lines():
                            if not line:
                                continue
                            last = line
                            if first is None and line != "data: [DONE]" and _has_text(line):
                                first = time.perf_counter()
                        if last != "data: [DONE]":
                            errors.append(f"stream ended without [DONE]: {last[:200]!r}")
                            return
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    return
                latencies.append((time.perf_counter() - t0) * 1000)
                ttfts.append(((first or time.perf_counter()) - t0) * 1000)

            async def client_loop(c: int) -> None:
                for k in range(requests_per_client):
                    await one(c * requests_per_client + k)

            t0 = time.perf_counter()
            await asyncio.gather(*(client_loop(c) for c in range(concurrency)))
            seconds = time.perf_counter() - t0

        def pct(xs: list[float], q: float) -> float:
            if not xs:
                return float("nan")
            if len(xs) == 1:
                return xs[0]
            return statistics.quantiles(xs, n=100, method="inclusive")[q - 1]

        for e in errors[:5]:
            logger.warning("load error: %s", e)
        return {
            "requests": concurrency * requests_per_client,
            "errors": len(errors),
            "seconds": round(seconds, 3),
            "rps": round(len(latencies) / seconds, 3) if seconds > 0 else 0.0,
            "p50_ms": round(pct(latencies, 50), 1),
            "p95_ms": round(pct(latencies, 95), 1),
            "ttft_p50_ms": round(pct(ttfts, 50), 1),
        }

    return asyncio.run(main())
