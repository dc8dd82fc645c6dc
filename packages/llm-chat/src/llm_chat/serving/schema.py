"""The bottom layer of serving: HTTP limits, OpenAI-style errors and the request schema (pydantic only).

`POST /v1/chat/completions` accepts what `ChatCompletionRequest` describes; anything else is a 400, never a
500. Nothing here imports the engine, the app or the UI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


def api_error_from(e: ValidationError) -> ApiError:
    """The first pydantic validation error as the 400 OpenAI sends (unknown argument, or invalid value)."""
    err = e.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    param = ".".join(loc) or None
    if err.get("type") == "extra_forbidden":
        return ApiError(400, f"Unrecognized request argument supplied: {param}", param=param)
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    return ApiError(400, f"Invalid value for '{param}': {msg}", param=param, code="invalid_value")
