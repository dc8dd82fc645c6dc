"""Inference for llm-chat: streamed generation, the chat REPL, batch answers for prompts, export, and the
answers `eval` and `compare` score (held-out sets, the multi-task test modes, base vs tuned questions).

llm-chat chat --adapter_dir outputs/llm-chat          # REPL: /reset, /system TEXT, /exit, Ctrl-D
llm-chat chat --config tiny --prompt "你好"             # one streamed answer, for scripts
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from lora_shared.errors import UsageError

from . import metrics as M
from .data import render
from .model import load_for_cfg
from .serving.engine import GenRequest, Job, eos_ids, generate_rows, stream_generation

logger = logging.getLogger(__name__)


def gen_request(
    tokenizer,
    messages: list[dict],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_p: float = 0.9,
    top_k: int = 50,
    repetition_penalty: float = 1.0,
    stop: list[str] | None = None,
) -> GenRequest:
    """The engine request for one chat prompt (temperature 0 = greedy)."""
    prompt = render(tokenizer, messages, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    greedy = not (temperature and temperature > 0)
    return GenRequest(
        list(prompt_ids),
        None,
        int(max_new_tokens),
        temperature=0.0 if greedy else float(temperature),
        top_p=1.0 if greedy else float(top_p),
        stop=[s for s in stop or [] if s],
        top_k=0 if greedy else int(top_k),
        repetition_penalty=float(repetition_penalty),
    )


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

    Generation is the server's engine (`serving.engine.stream_generation`: the same streaming, stop strings
    and sampling as `serve` and the web UI) on `model` as it is. Stop strings end the answer (the stop
    string itself is not yielded; text that might be the start of one is held back). Closing the generator
    early (a client disconnect) cancels generation. If `stats` is a dict, it receives prompt_tokens,
    completion_tokens, finish_reason ("stop" | "length") and seconds when the generator finishes.
    """
    req = gen_request(
        tokenizer,
        messages,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        stop=stop,
    )
    t0 = time.perf_counter()
    end = ("end", "length", {"prompt_tokens": len(req.prompt_ids), "completion_tokens": 0})
    try:
        for ev in stream_generation(model, tokenizer, req):
            if ev[0] == "delta":
                yield ev[1]
            else:
                end = ev
    finally:
        if stats is not None:
            _, reason, usage = end
            stats.update(
                prompt_tokens=usage["prompt_tokens"],
                completion_tokens=usage["completion_tokens"],
                finish_reason="length" if reason == "length" else "stop",
                seconds=time.perf_counter() - t0,
            )


def answer(model, tokenizer, messages: list[dict], **gen) -> dict:
    """The whole answer plus its stats: {text, prompt_tokens, completion_tokens, finish_reason, seconds}."""
    stats: dict = {}
    text = "".join(stream_chat(model, tokenizer, messages, stats=stats, **gen))
    return {"text": text.strip(), **stats}


def answer_many(model, tokenizer, prompts: list[list[dict]], *, batch_size: int = 8, **gen) -> list[dict]:
    """`answer` for many prompts, `batch_size` rows per left-padded generate (the engine's `generate_rows`,
    as `serve` batches): on a CPU, decoding is memory-bound, so 8 rows cost little more than one.
    `seconds` is the batch's wall time, shared by its rows."""
    if batch_size <= 1:
        return [answer(model, tokenizer, p, **gen) for p in prompts]
    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = [gen_request(tokenizer, p, **gen) for p in prompts[start : start + batch_size]]
        texts: list[list[str]] = [[] for _ in chunk]
        jobs = [
            Job(req, lambda ev, t=t: t.append(ev[1]) if ev[0] == "delta" else None)
            for req, t in zip(chunk, texts)
        ]
        t0 = time.perf_counter()
        rows = generate_rows(model, tokenizer, jobs, eos_ids=eos, pad_id=pad)
        seconds = time.perf_counter() - t0
        for row, text in zip(rows, texts):
            row.flush()
            out.append(
                {
                    "text": "".join(text).strip(),
                    **row.usage(),
                    "finish_reason": "stop" if row.finished == "stop" else "length",
                    "seconds": seconds,
                }
            )
    return out


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
    from lora_shared.models import OFFLINE_MODELS

    try:
        return load_for_cfg(cfg)
    except UsageError as e:
        if cfg.model.model_name_or_path in OFFLINE_MODELS:
            raise  # one of `make models`' names: the error already gives the command that builds it
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
    from .data import iter_json_records

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
            for line, rec in iter_json_records(p):
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
    from lora_shared.runs import export_merged, export_target

    target = export_target(cfg.infer.export_dir, cfg.model.adapter_dir)  # refused before loading: exit 2
    model, tokenizer = load_for_cfg(cfg, require_adapter=True)
    export_merged(model, target, processor=tokenizer, run_dir=cfg.model.adapter_dir)
    print(f"merged model: {target}")
    return 0


# ---------------------------------------------------------------------------------------------- eval / compare
# The reference multi-task system's (seed 004) tasks: our record task id -> the name its prompt uses.
MT_TASKS = {
    "scene_cls": "问题场景分类",
    "qtype_cls": "问题类型分类",
    "dp_qa": "问题回答",
    "filename_extract": "文件名称提取",
}
# --eval_mode -> the steps it runs, in order (seed 004's test modes: 综合测试, 交互式测试, 性能评估, 全部测试).
EVAL_STEPS = {
    "accuracy": ("accuracy",),
    "tasks": ("tasks",),
    "interactive": ("interactive",),
    "sequence": ("tasks", "accuracy", "interactive"),
}


def task_prompt(task_name: str, text: str) -> str:
    """The multi-task user turn: `任务: <task name>\\n输入: <text>` (seed 004's format: no system prompt)."""
    return f"任务: {task_name}\n输入: {text}"


def score_plan(cfg, command: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(steps, sides) of `eval` / `compare`, checked before any model is built. Sides: "base" (adapter off)
    and/or "tuned" (base + adapter)."""
    infer = cfg.infer
    if infer.eval_mode not in EVAL_STEPS:
        raise UsageError(
            f"--eval_mode {infer.eval_mode!r} is not one of {', '.join(EVAL_STEPS)}; pass one of them"
        )
    if infer.examples_per_task < 1:
        raise UsageError(f"--examples_per_task {infer.examples_per_task}: must be 1 or more")
    if infer.base_only and infer.with_base:
        raise UsageError(
            "--base_only and --with_base exclude each other: base_only scores the base model alone, "
            "with_base scores it beside the adapter; pass one"
        )
    if infer.base_only:
        sides: tuple[str, ...] = ("base",)
    elif not cfg.model.adapter_dir:
        raise UsageError(
            "pass --adapter_dir (the output_dir of a finished `train` run), or --base_only true to score "
            "the base model alone"
        )
    else:
        sides = ("base", "tuned") if command == "compare" or infer.with_base else ("tuned",)
    steps = EVAL_STEPS[infer.eval_mode] if command == "eval" else ("compare",)
    out = Path(cfg.train.output_dir).expanduser()
    if ({"accuracy", "compare"} & set(steps)) and out.exists() and not out.is_dir():
        raise UsageError(f"--output_dir {out}: is a file, not a directory; pass a directory for the reports")
    return steps, sides


def side_of(model, side: str):
    """Context in which `model` answers as `side`: "base" disables a PeftModel's adapters, "tuned" is as is."""
    from contextlib import nullcontext

    from peft import PeftModel

    return model.disable_adapter() if side == "base" and isinstance(model, PeftModel) else nullcontext()


def eval_sets(spec: str, data_args) -> dict[str, list[dict]]:
    """Held-out records per set: built-in names (their test split) or JSONL paths."""
    from .data import BUILTIN, builtin_path, read_dialogs

    sets = {}
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        if item in BUILTIN:
            sets[item], _ = read_dialogs(builtin_path(item, "test"), "openai")
        else:
            sets[Path(item).stem], _ = read_dialogs(item, data_args.data_format, data_args.skip_bad_records)
    if not sets:
        raise UsageError("eval_tasks is empty")
    return sets


def dialog_loss(model, tokenizer, records: list[dict], max_length: int | None, batch_size: int = 8) -> float:
    """Mean assistant-token loss over held-out dialogs (for perplexity)."""
    import torch

    from .data import IGNORE_INDEX, collate_fn, tokenize_dialogs

    ds = tokenize_dialogs(tokenizer, records, max_length, "perplexity")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(ds), batch_size):
            batch = collate_fn(
                [ds[j] for j in range(i, min(i + batch_size, len(ds)))], tokenizer.pad_token_id
            )
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits.float()
            labels = batch["labels"][:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
            total += nll.item()
            count += int((labels != IGNORE_INDEX).sum())
    return total / max(count, 1)


def score_answers(
    model, tokenizer, records, labels_by_task, opts: dict, side: str, desc: str, batch_size: int = 8
) -> list[dict]:
    """Greedy answers of `side` to held-out dialogs (`batch_size` per generate), each scored for its task."""
    from tqdm.auto import tqdm

    from .data import prompt_and_reference

    out = []
    with side_of(model, side), tqdm(total=len(records), desc=desc) as bar:
        for start in range(0, len(records), max(batch_size, 1)):
            chunk = records[start : start + max(batch_size, 1)]
            pairs = [prompt_and_reference(r) for r in chunk]
            results = answer_many(model, tokenizer, [p for p, _ in pairs], batch_size=batch_size, **opts)
            bar.update(len(chunk))
            out.extend(
                _scored(r, p, ref, res, labels_by_task) for r, (p, ref), res in zip(chunk, pairs, results)
            )
    return out


def _scored(r: dict, prompt: list[dict], reference, res: dict, labels_by_task) -> dict:
    """One prediction row: the item, the answer and its task's scores."""
    return {
        "task": r.get("task"),
        "question": prompt[-1]["content"],
        "reference": reference,
        "prediction": res["text"],
        **M.score_record(r, res["text"], labels_by_task),
    }


def score_sets(
    model, tokenizer, sets: dict[str, list[dict]], sides, opts: dict, *, cap, max_length, batch_size: int = 8
):
    """Score every set for every side: (summary, {task: (set, n)}, prediction rows).

    Summary keys are `eval_<task>_<metric>` (tuned), `base_eval_<task>_<metric>` (base), the same for
    `<set>_perplexity` and `classification_accuracy`. A prediction row holds the tuned answer and scores
    flat (as before) and the base ones as `base_prediction` / `base_<metric>`.
    """
    from lora_shared.errors import DataError

    summary: dict[str, float] = {}
    counts: dict[str, tuple[str, int]] = {}
    predictions: list[dict] = []
    for name, records in sets.items():
        labels = M.task_labels(records)  # from the whole set, so a cap cannot hide a label
        records = records[:cap] if cap else records
        by_side = {}
        for side in sides:
            prefix = "base_" if side == "base" else ""
            by_side[side] = score_answers(
                model, tokenizer, records, labels, opts, side, f"eval {name} {side}", batch_size
            )
            summary.update(M.summarize_eval(name, by_side[side], prefix))
            try:
                with side_of(model, side):
                    loss = dialog_loss(model, tokenizer, records, max_length)
                summary[f"{prefix}eval_{name}_perplexity"] = round(M.perplexity(loss), 4)
            except DataError as e:
                # Every dialog longer than max_length: no perplexity, the other scores stand.
                logger.warning("no perplexity for %s: %s", name, e)
        tasks = [row["task"] or name for row in by_side[sides[-1]]]
        for task in sorted(set(tasks), key=_task_rank):
            counts[task] = (name, tasks.count(task))
        for i, row in enumerate(by_side[sides[-1]]):
            merged = {"set": name, **row, "task": row["task"] or name}
            if len(sides) == 2:
                base = by_side["base"][i]
                merged.update(
                    {f"base_{k}": v for k, v in base.items() if k not in ("task", "question", "reference")}
                )
            predictions.append(merged)
    for side in sides:
        summary.update(M.classification_accuracy(summary, "base_" if side == "base" else ""))
    return summary, counts, predictions


def _task_rank(task: str) -> tuple[int, str]:
    """Sort key: the multi-task tasks in the reference system's order, then others by name."""
    order = list(MT_TASKS)
    return (order.index(task) if task in order else len(order), task)


def _task_name(task: str) -> str:
    return f"{task} ({MT_TASKS[task]})" if task in MT_TASKS else task


def _input_of(content: str) -> str:
    """The text after `输入: ` in a multi-task prompt, else the whole user turn."""
    head, sep, rest = content.partition("\n输入: ")
    return rest if sep and head.startswith("任务: ") else content


def show_task_examples(model, tokenizer, sets, sides, opts: dict, per_task: int, file=None) -> None:
    """Seed 004's 综合测试: the first `per_task` held-out items of every task, answered by each side, with the
    expected output and the item's scores."""
    file = file or sys.stdout
    for name, records in sets.items():
        labels = M.task_labels(records)
        by_task: dict[str, list[dict]] = {}
        for r in records:
            items = by_task.setdefault(r.get("task") or name, [])
            if len(items) < per_task:
                items.append(r)
        for task in sorted(by_task, key=_task_rank):
            items = by_task[task]
            print(f"\n## {name}: {_task_name(task)}", file=file)
            scored = {
                s: score_answers(model, tokenizer, items, labels, opts, s, f"{task} {s}") for s in sides
            }
            for i, r in enumerate(items):
                print(f"\n输入: {_input_of(scored[sides[0]][i]['question'])}", file=file)
                print(f"预期: {r['messages'][-1]['content']}", file=file)
                for s in sides:
                    row = scored[s][i]
                    marks = ", ".join(f"{k} {row[k]:.2f}" for k in M.MAIN_METRICS if k in row)
                    print(f"{s}: {row['prediction']}  [{marks}]", file=file)
    file.flush()


def interactive_tasks(model, tokenizer, sides, opts: dict, system: str | None = None, stdin=None) -> None:
    """Seed 004's 交互式测试: each input line is answered for the picked task. `/task N` (or its name or id)
    picks one of the multi-task tasks, `/task 0` free chat (the line as typed); `/tasks` lists them;
    `/exit` or end of input stops. Answers go to stdout (one line per side), prompts to stderr."""
    stdin = stdin or sys.stdin
    names = list(MT_TASKS.values())
    menu = ", ".join(f"{i} {n}" for i, n in enumerate(names, 1)) + ", 0 自由对话 (free chat)"
    by_key = {str(i): n for i, n in enumerate(names, 1)} | {n: n for n in names} | MT_TASKS
    current: str | None = names[0]
    print(
        f"[llm-chat eval] interactive: /task N picks the task ({menu}); /exit or Ctrl-D ends", file=sys.stderr
    )
    tty = stdin.isatty()
    while True:
        if tty:
            sys.stderr.write(f"\n[{current or '自由对话'}]> ")
            sys.stderr.flush()
        line = stdin.readline()
        if not line:
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return
        if text == "/tasks":
            print(menu, file=sys.stderr)
            continue
        if text.startswith("/task"):
            pick = text[len("/task") :].strip()
            if pick in ("0", "chat", "自由对话"):
                current = None
            elif pick in by_key:
                current = by_key[pick]
            else:
                print(f"[unknown task {pick!r}; choose {menu}]", file=sys.stderr)
                continue
            print(f"[task: {current or '自由对话'}]", file=sys.stderr)
            continue
        content = task_prompt(current, text) if current else text
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": content}
        ]
        for side in sides:
            with side_of(model, side):
                res = answer(model, tokenizer, messages, **opts)
            prefix = f"{side}: " if len(sides) > 1 else ""
            print(f"{prefix}{res['text']}", flush=True)


def compare_questions(path: str | None) -> list[dict]:
    """[{messages (prompt), question, keywords, reference}] from a JSONL file or the built-in banking test split."""
    from .data import builtin_path, iter_json_records, prompt_and_reference, read_dialogs

    if path is None:
        records, _ = read_dialogs(builtin_path("banking", "test"), "openai")
        out = []
        for r in records:
            prompt, reference = prompt_and_reference(r)
            out.append(
                {
                    "messages": prompt,
                    "question": prompt[-1]["content"],
                    "keywords": r.get("keywords", []),
                    "reference": reference,
                }
            )
        return out
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"questions file not found: {p}")
    out = []
    for line, rec in iter_json_records(p):
        if not (
            isinstance(rec, dict)
            and isinstance(rec.get("question"), str)
            and isinstance(rec.get("keywords"), list)
        ):
            raise UsageError(
                f'{p}:{line}: expected {{"question": str, "keywords": [str, ...], "reference"?: str}}'
            )
        msgs = ([{"role": "system", "content": rec["system"]}] if rec.get("system") else []) + [
            {"role": "user", "content": rec["question"]}
        ]
        out.append(
            {
                "messages": msgs,
                "question": rec["question"],
                "keywords": rec["keywords"],
                "reference": rec.get("reference"),
            }
        )
    if not out:
        raise UsageError(f"{p}: no questions; write one JSON object per line")
    return out


def compare_answers(model, tokenizer, questions: list[dict], sides, opts: dict) -> list[dict]:
    """Each question answered by each side and scored (keyword match, completeness, overall, latency, tokens/s);
    with both sides a row also gets its outcome for the tuned model: "win" / "tie" / "loss" on overall."""
    from tqdm.auto import tqdm

    rows = []
    for q in tqdm(questions, desc="compare"):
        row = {"question": q["question"], "keywords": q["keywords"]}
        for side in sides:
            with side_of(model, side):
                res = answer(model, tokenizer, q["messages"], **opts)
            finished = res["finish_reason"] == "stop"
            row[side] = {
                "answer": res["text"],
                **M.answer_scores(res["text"], q["keywords"], q["reference"], finished),
                "latency_s": res["seconds"],
                "completion_tokens": res["completion_tokens"],
                "tokens_per_s": res["completion_tokens"] / res["seconds"] if res["seconds"] > 0 else 0.0,
            }
        rows.append(row)
    if len(sides) == 2:
        outcomes, _ = M.win_tie_loss(
            [r["base"]["overall"] for r in rows], [r["tuned"]["overall"] for r in rows]
        )
        for r, o in zip(rows, outcomes):
            r["outcome"] = o
    return rows
