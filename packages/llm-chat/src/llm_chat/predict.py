"""Inference for llm-chat: streamed generation, the chat REPL, batch answers for prompts, and export.

llm-chat chat --adapter_dir outputs/llm-chat          # REPL: /reset, /system TEXT, /exit, Ctrl-D
llm-chat chat --config tiny --prompt "你好"             # one streamed answer, for scripts
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from lora_shared.errors import UsageError

from .data import render
from .model import END_OF_TURN, end_of_turn_ids, load_for_cfg

logger = logging.getLogger(__name__)


def generation_kwargs(
    tokenizer,
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_p: float = 0.9,
    top_k: int = 50,
    repetition_penalty: float = 1.0,
) -> dict:
    """Keyword arguments for `model.generate`; temperature <= 0 means greedy decoding."""
    kw = {
        "max_new_tokens": int(max_new_tokens),
        "eos_token_id": end_of_turn_ids(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "repetition_penalty": float(repetition_penalty),
    }
    if temperature and temperature > 0:
        kw.update(do_sample=True, temperature=float(temperature), top_p=float(top_p), top_k=int(top_k))
    else:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kw


def _stopping(cancel: threading.Event, prompt_len: int, counter: dict):
    """A StoppingCriteria that counts new tokens and stops when the consumer cancels."""
    import torch
    from transformers import StoppingCriteria

    class _Cancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            counter["completion_tokens"] = int(input_ids.shape[1] - prompt_len)
            return torch.full(
                (input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device
            )

    return _Cancel()


def stream_chat(
    model,
    tokenizer,
    messages: list[dict],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_p: float = 0.9,
    top_k: int = 50,
    repetition_penalty: float = 1.0,
    stop: list[str] | None = None,
    stats: dict | None = None,
) -> Iterator[str]:
    """Yield the assistant's answer to `messages` as text chunks while it is generated.

    Generation runs in a thread feeding a TextIteratorStreamer. Stop strings end the answer (the stop
    string itself is not yielded; text that might be the start of one is held back). Closing the generator
    early (a client disconnect) cancels generation. If `stats` is a dict, it receives prompt_tokens,
    completion_tokens, finish_reason ("stop" | "length") and seconds when the generator finishes.
    """
    import torch
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    stops = [s for s in [*(stop or []), END_OF_TURN] if s]
    hold = max(len(s) for s in stops) - 1
    prompt = render(tokenizer, messages, add_generation_prompt=True)
    enc = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    device = next(model.parameters()).device
    input_ids = enc["input_ids"].to(device)
    prompt_len = input_ids.shape[1]
    counter = {"completion_tokens": 0}
    cancel = threading.Event()
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = generation_kwargs(
        tokenizer,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
    )
    error: list[BaseException] = []

    def run():
        try:
            with torch.inference_mode():
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_stopping(cancel, prompt_len, counter)]),
                    **kwargs,
                )
            counter["completion_tokens"] = int(out.shape[1] - prompt_len)
            counter["ended_by_eos"] = bool(
                out.shape[1] > prompt_len and int(out[0, -1]) in kwargs["eos_token_id"]
            )
        except BaseException as e:  # surfaced in the consumer's thread below
            error.append(e)
            streamer.end()

    t0 = time.perf_counter()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    stopped = False
    try:
        pending = ""
        for chunk in streamer:
            pending += chunk
            hits = [i for i in (pending.find(s) for s in stops) if i >= 0]
            if hits:
                if pending[: min(hits)]:
                    yield pending[: min(hits)]
                pending, stopped = "", True
                cancel.set()
                break
            if len(pending) > hold:
                yield pending[: len(pending) - hold]
                pending = pending[len(pending) - hold :]
        if pending and not stopped:
            yield pending
    finally:
        cancel.set()
        thread.join()
        if stats is not None:
            n = counter["completion_tokens"]
            ended = stopped or counter.get("ended_by_eos", False) or n < max_new_tokens
            stats.update(
                prompt_tokens=int(prompt_len),
                completion_tokens=n,
                finish_reason="stop" if ended else "length",
                seconds=time.perf_counter() - t0,
            )
    if error and not isinstance(error[0], GeneratorExit):
        raise error[0]


def answer(model, tokenizer, messages: list[dict], **gen) -> dict:
    """The whole answer plus its stats: {text, prompt_tokens, completion_tokens, finish_reason, seconds}."""
    stats: dict = {}
    text = "".join(stream_chat(model, tokenizer, messages, stats=stats, **gen))
    return {"text": text.strip(), **stats}


def gen_options(infer, greedy: bool = False) -> dict:
    """Generation keyword arguments from the parsed ChatPredictArgs; `greedy` = how eval/compare score."""
    return {
        "max_new_tokens": infer.max_new_tokens,
        "temperature": 0.0 if greedy else infer.temperature,
        "top_p": infer.top_p,
        "top_k": infer.top_k,
        "repetition_penalty": infer.score_repetition_penalty if greedy else infer.repetition_penalty,
        "stop": list(infer.stop),
    }


def _describe(cfg) -> str:
    if cfg.model.adapter_dir:
        return f"adapter {cfg.model.adapter_dir} on {cfg.model.model_name_or_path}"
    if cfg.model.model_type:
        return f"random tiny {cfg.model.model_type} (smoke test: expect gibberish), no adapter"
    return (
        f"base model {cfg.model.model_name_or_path} (no adapter: pass --adapter_dir to chat with a tuned one)"
    )


def _load_or_explain(cfg):
    try:
        return load_for_cfg(cfg)
    except UsageError as e:
        raise UsageError(
            f"no model available ({e}). Try `llm-chat chat --config tiny` (random smoke model), "
            "`--config offline` after `make models`, or `--adapter_dir RUN` of a trained run"
        ) from None


def chat(cfg) -> int:
    """Interactive streamed chat (REPL) with history, or a single --prompt."""
    infer = cfg.infer
    system = infer.system or cfg.data.system_prompt
    model, tokenizer = _load_or_explain(cfg)
    print(f"[llm-chat] {_describe(cfg)}", file=sys.stderr)
    opts = gen_options(infer)
    history: list[dict] = [{"role": "system", "content": system}] if system else []

    def reply(text: str) -> None:
        history.append({"role": "user", "content": text})
        parts = []
        gen = stream_chat(model, tokenizer, history, **opts)
        try:
            for chunk in gen:
                parts.append(chunk)
                sys.stdout.write(chunk)
                sys.stdout.flush()
        except KeyboardInterrupt:  # Ctrl-C stops this answer, not the session
            gen.close()
            sys.stdout.write(" [interrupted]")
        sys.stdout.write("\n")
        sys.stdout.flush()
        history.append({"role": "assistant", "content": "".join(parts).strip() or "..."})

    if infer.prompt is not None:
        reply(infer.prompt)
        return 0

    interactive = sys.stdin.isatty()
    if interactive:
        print("commands: /reset (clear history), /system TEXT, /exit (or Ctrl-D)", file=sys.stderr)
    while True:
        if interactive:
            sys.stderr.write("\n> ")
            sys.stderr.flush()
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            line = ""
        if not line:  # EOF (Ctrl-D / end of piped input): leave cleanly
            if interactive:
                sys.stderr.write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            history[:] = [{"role": "system", "content": system}] if system else []
            print("[history cleared]", file=sys.stderr)
            continue
        if text.startswith("/system"):
            system = text[len("/system") :].strip() or None
            history[:] = [{"role": "system", "content": system}] if system else []
            print(f"[system set: {system or 'none'}; history cleared]", file=sys.stderr)
            continue
        if text.startswith("/") and " " not in text:
            print(f"[unknown command {text}; use /reset, /system TEXT, /exit]", file=sys.stderr)
            continue
        reply(text)


def read_prompts(inputs: list[str]) -> list[list[dict]]:
    """Prompts from arguments or files (.txt: one per line; .jsonl: {prompt|question} or messages)."""
    from .data import _iter_json_records

    out = []
    for item in inputs:
        p = Path(item)
        if p.suffix in (".txt", ".jsonl", ".json") and p.is_file():
            if p.suffix == ".txt":
                out += [
                    [{"role": "user", "content": s.strip()}]
                    for s in p.read_text("utf-8").splitlines()
                    if s.strip()
                ]
                continue
            for line, rec in _iter_json_records(p):
                if isinstance(rec, dict) and isinstance(rec.get("messages"), list):
                    msgs = rec["messages"]
                    out.append(msgs[:-1] if msgs and msgs[-1].get("role") == "assistant" else msgs)
                elif isinstance(rec, dict) and isinstance(rec.get("prompt") or rec.get("question"), str):
                    out.append([{"role": "user", "content": rec.get("prompt") or rec["question"]}])
                else:
                    raise UsageError(
                        f'{p}:{line}: expected {{"prompt": ...}}, {{"question": ...}} or messages'
                    )
        elif p.suffix in (".txt", ".jsonl", ".json") and not p.exists() and "/" in item:
            raise UsageError(f"prompt file not found: {p}")
        else:
            out.append([{"role": "user", "content": item}])
    if not out:
        raise UsageError("give prompts as arguments, or a .txt / .jsonl file of them")
    return out


def predict(cfg, inputs: list[str]) -> int:
    """Answer each prompt (text, or JSON lines with --json)."""
    prompts = read_prompts(inputs)
    model, tokenizer = _load_or_explain(cfg)
    system = cfg.infer.system or cfg.data.system_prompt
    for messages in prompts:
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}, *messages]
        res = answer(model, tokenizer, messages, **gen_options(cfg.infer))
        question = messages[-1]["content"]
        if cfg.infer.json:
            print(
                json.dumps(
                    {
                        "prompt": question,
                        "answer": res["text"],
                        **{k: res[k] for k in ("completion_tokens", "finish_reason")},
                        "seconds": round(res["seconds"], 3),
                    },
                    ensure_ascii=False,
                )
            )
        else:
            print(f"Q: {question}\nA: {res['text']}\n")
    return 0


def export(cfg) -> int:
    """Merge the adapter into the base model; save a standalone safetensors model dir with the tokenizer."""
    from lora_shared.runs import export_merged

    model, tokenizer = load_for_cfg(cfg, require_adapter=True)
    target = Path(cfg.infer.export_dir or Path(cfg.model.adapter_dir) / "merged")
    export_merged(model, target, processor=tokenizer)
    print(f"merged model: {target}")
    return 0
