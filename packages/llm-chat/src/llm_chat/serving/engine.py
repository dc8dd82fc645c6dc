"""The one generation engine: every answer llm-chat produces (chat, predict, eval, compare, serve, web UI)
streams through `generate_rows`.

- `GenRequest`: one generation, already tokenised (prompt ids, adapter, max_tokens, sampling, stop strings).
- `RowState`: per-row incremental detokenisation, stop strings (the caller's plus the chat template's
  end-of-turn text) and the finish reason; it sends ("delta", text) events to its `Job`.
- `generate_rows(model, tokenizer, jobs)`: one left-padded `model.generate` for a batch of jobs, each row
  with its own temperature / top-k / top-p, streamed and stopped row by row.
- `stream_generation(model, tokenizer, req)`: one request on the model as it is (chat, eval, compare).
- `Engine`: owns (model, tokenizer) and ONE worker thread for the server and the UI. Requests wait in a
  bounded queue (full -> QueueFull); the worker takes the oldest request plus queued ones with the same
  adapter and sampling settings and runs them as one `generate_rows` batch; clients that leave cancel.

Events a job receives: ("delta", text), ("end", finish_reason, usage) or ("error", message).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..model import END_OF_TURN
from .schema import ApiError, QueueFull

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Requests and per-row streaming state
# ----------------------------------------------------------------------------------------------------------
@dataclass
class GenRequest:
    """One generation, already tokenised and validated. temperature <= 0 is greedy; top_k 0 is off."""

    prompt_ids: list[int]
    adapter: str | None  # None = base model (adapters disabled) in an Engine; ignored by stream_generation
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    top_k: int = 0
    repetition_penalty: float = 1.0

    def batch_key(self) -> tuple:
        # Rows of one `generate` call share the adapter and the repetition penalty (temperature, top-k and
        # top-p are applied per row); a seeded request runs alone so its seed means something.
        return (self.adapter, self.repetition_penalty, self.seed if self.seed is not None else "*")


@dataclass
class Job:
    """A request being generated. `sink` receives its events (on the generating thread); `cancel` is set
    when the consumer goes away."""

    req: GenRequest
    sink: Callable[[tuple], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))
    generated: int = 0  # completion tokens so far (the generating thread updates it)

    def send(self, ev: tuple) -> None:
        """Deliver an event; a consumer that is gone (closed event loop) just cancels the job."""
        try:
            self.sink(ev)
        except Exception:
            self.cancel.set()


class RowState:
    """Per-row incremental detokenisation, stop strings and finish reason.

    Detokenisation uses the prefix/read offsets of TGI/vLLM: decode only the last few tokens and take the
    text they add, so each step costs O(1) rather than re-decoding the whole answer, and SentencePiece
    leading spaces and multi-token UTF-8 characters come out right. The answer ends at the earliest stop
    string; the chat template's end-of-turn text is always one (a template whose `<|im_end|>` is not a
    single token writes it as text).
    """

    def __init__(self, job: Job, tokenizer, eos_ids: set[int]):
        self.job, self.tok, self.eos_ids = job, tokenizer, eos_ids
        self.stops = [s for s in (*job.req.stop, END_OF_TURN) if s]
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
        text = self.text
        # Only look where a stop string could newly complete (never before what was already sent).
        hits = [at for s in self.stops if (at := text.find(s, max(0, self.sent - len(s) + 1))) != -1]
        if hits:
            self._emit(text[: min(hits)])
            self.finished, self.stop_string = "stop", True
            return
        if len(self.ids) >= self.job.req.max_tokens:
            self.finished = "length"
            return  # flush() sends the rest
        # Hold back a tail that may be the start of a stop string.
        hold = 0
        for s in self.stops:
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

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": len(self.job.req.prompt_ids), "completion_tokens": len(self.ids)}


# ----------------------------------------------------------------------------------------------------------
# The one generate call
# ----------------------------------------------------------------------------------------------------------
def _make_criteria(rows: list[RowState], prompt_len: int):
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
    """A LogitsProcessor applying each row's own temperature, top-k and top-p (greedy rows keep only their
    argmax), so requests with different sampling settings share one batch. Mirrors transformers'
    TemperatureLogitsWarper -> TopKLogitsWarper -> TopPLogitsWarper."""
    import torch
    from transformers import LogitsProcessor

    temps = torch.tensor([[r.temperature if r.temperature > 0 else 1.0] for r in reqs])
    top_ks = [int(r.top_k or 0) for r in reqs]
    top_ps = torch.tensor([[r.top_p] for r in reqs])
    greedy = torch.tensor([[r.temperature <= 0] for r in reqs])

    class RowSampling(LogitsProcessor):
        def __call__(self, input_ids, scores):
            dev = scores.device
            scores = scores / temps.to(dev, scores.dtype)
            for i, k in enumerate(top_ks):
                if 0 < k < scores.shape[-1]:
                    kth = torch.topk(scores[i], k).values[-1]
                    scores[i] = scores[i].masked_fill(scores[i] < kth, -float("inf"))
            sorted_scores, order = torch.sort(scores, descending=False)
            cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
            drop_sorted = cum <= (1 - top_ps.to(dev, cum.dtype))
            drop_sorted[:, -1] = False  # always keep the most likely token
            drop = drop_sorted.scatter(1, order, drop_sorted)
            scores = scores.masked_fill(drop, -float("inf"))
            best = torch.full_like(scores, -float("inf")).scatter(1, scores.argmax(dim=-1, keepdim=True), 0.0)
            return torch.where(greedy.to(dev), best, scores)

    return RowSampling()


def generate_rows(model, tokenizer, jobs: list[Job], *, eos_ids: set[int], pad_id: int) -> list[RowState]:
    """Generate every job's answer in ONE left-padded `model.generate`, streaming deltas to each job.

    The model is used as it is (the caller picks the adapter). Rows stop on eos, a stop string, their own
    max_tokens or their job's cancel flag. Returns the rows, finished or not; `flush()` and the "end" event
    are the caller's (it decides what a cancelled row reports).
    """
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    req0 = jobs[0].req
    width = max(len(j.req.prompt_ids) for j in jobs)
    # Left padding: every row's next token lands in the same column.
    input_ids = torch.full((len(jobs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(jobs), width), dtype=torch.long)
    for i, job in enumerate(jobs):
        ids = job.req.prompt_ids
        input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[i, width - len(ids) :] = 1
    rows = [RowState(job, tokenizer, eos_ids) for job in jobs]
    sampling = any(j.req.temperature > 0 for j in jobs)
    kwargs: dict[str, Any] = {
        "max_new_tokens": max(j.req.max_tokens for j in jobs),
        "do_sample": sampling,
        "pad_token_id": pad_id,
        "eos_token_id": sorted(eos_ids),
        "repetition_penalty": float(req0.repetition_penalty),
        "stopping_criteria": StoppingCriteriaList([_make_criteria(rows, width)]),
    }
    if sampling:
        # Per-row temperature, top-k and nucleus (RowSampling), nothing else: transformers' own warpers are
        # switched off (top_k=0; None would mean its default of 50).
        kwargs.update(
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            logits_processor=LogitsProcessorList([_row_sampling([j.req for j in jobs])]),
        )
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if req0.seed is not None:
        torch.manual_seed(req0.seed)
    device = next(model.parameters()).device
    with torch.inference_mode():
        model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)
    return rows


def stream_generation(model, tokenizer, req: GenRequest) -> Iterator[tuple]:
    """Events of one generation on `model` as it is (no queue, no adapter switching): what chat, predict,
    eval and compare use. Generation runs on a helper thread; closing the iterator early cancels and joins
    it; an exception in generation is raised here, in the consumer's thread."""
    events: queue.Queue = queue.Queue()
    job = Job(req, events.put)
    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    error: list[BaseException] = []

    def run() -> None:
        try:
            (row,) = generate_rows(model, tokenizer, [job], eos_ids=eos, pad_id=pad)
            if row.finished != "cancelled":
                row.flush()
            events.put(("end", row.finished or "length", row.usage()))
        except BaseException as e:  # re-raised below, where the consumer sees it
            error.append(e)
            events.put(("error", f"{type(e).__name__}: {e}"))

    thread = threading.Thread(target=run, name="llm-chat-generate", daemon=True)
    thread.start()
    try:
        while True:
            ev = events.get()
            if ev[0] == "error":
                raise error[0]
            yield ev
            if ev[0] == "end":
                return
    finally:
        job.cancel.set()  # the consumer stopped early (generator closed): stop generating
        thread.join()


# ----------------------------------------------------------------------------------------------------------
# Engine: one model, one worker thread, a bounded queue, batched generation
# ----------------------------------------------------------------------------------------------------------
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
        self.adapters = adapter_names(model)
        if base_name in self.adapters:
            raise ValueError(f"adapter name {base_name!r} clashes with the base model's name")
        self.max_queue, self.max_batch_size = max_queue, max(1, max_batch_size)
        self.device = next(model.parameters()).device
        self.context_length = context_length(model, tokenizer)
        self.eos_ids = eos_ids(model, tokenizer)
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

    def add_adapter(self, name: str, path: str) -> None:
        """Load a LoRA adapter dir as model `name` (the web UI's freshly trained run), between batches."""
        from peft import PeftModel

        if name in self.model_ids():
            raise ValueError(f"a model named {name!r} is already served")
        # Holding the lock keeps the worker from taking the next batch; wait out the running one.
        with self._cv:
            while self.in_flight:
                time.sleep(0.01)
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(path, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
            self.model.eval()
            self._active_adapter = self.model.active_adapter
            self.adapters = adapter_names(self.model)

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
        self.stats["batches"] += 1
        self.stats["max_batch"] = max(self.stats["max_batch"], len(batch))
        with self._select_adapter(batch[0].req.adapter):
            rows = generate_rows(self.model, self.tokenizer, batch, eos_ids=self.eos_ids, pad_id=self.pad_id)
        for row in rows:
            reason = row.finished or "length"
            if reason == "cancelled":
                self.stats["cancelled"] += 1
            else:
                row.flush()
            self.stats["requests"] += 1
            self.stats["completion_tokens"] += len(row.ids)
            row.job.send(("end", reason, row.usage()))


# ----------------------------------------------------------------------------------------------------------
# What a model can do: adapters, context, end-of-answer tokens
# ----------------------------------------------------------------------------------------------------------
def adapter_names(model) -> list[str]:
    """The LoRA adapters loaded in a peft model, sorted (none for a plain model)."""
    cfg = getattr(model, "peft_config", None)
    return sorted(cfg) if isinstance(cfg, dict) else []


def context_length(model, tokenizer) -> int:
    """The longest prompt + answer the model takes (its config, else the tokenizer's limit, else 2048)."""
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    v = getattr(tokenizer, "model_max_length", None)
    return v if isinstance(v, int) and 0 < v < 10**7 else 2048


def eos_ids(model, tokenizer) -> set[int]:
    """Token ids that end an answer: the model's and tokenizer's eos plus the known end-of-turn tokens."""
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        v = getattr(src, "eos_token_id", None)
        ids.update(v if isinstance(v, list | tuple) else [v] if v is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    # ChatML models end a turn with <|im_end|> even when eos is <|endoftext|>.
    for tok in (END_OF_TURN, "<end_of_turn>", "<|eot_id|>"):
        tid = tokenizer.convert_tokens_to_ids(tok) if tok in tokenizer.get_vocab() else None
        if tid is not None:
            ids.add(tid)
    if not ids:
        raise ValueError("the tokenizer has no eos token; cannot tell where an answer ends")
    return ids
