"""Streaming generation, stop strings and max_new_tokens, the chat REPL through stdin, one-shot --prompt."""

import io
import sys

import pytest
from llm_chat import predict as P
from llm_chat.cli import main
from llm_chat_testutils import dialog


def test_stream_chat_streams_and_stops_at_max_new_tokens(tokenizer, tiny_model):
    stats = {}
    chunks = list(
        P.stream_chat(tiny_model, tokenizer, dialog("hi"), max_new_tokens=12, temperature=0, stats=stats)
    )
    assert stats["completion_tokens"] == 12 and stats["finish_reason"] == "length"
    assert stats["prompt_tokens"] > 0 and stats["seconds"] > 0
    assert len(chunks) >= 1 and all(isinstance(c, str) for c in chunks)
    # Greedy decoding is deterministic: the streamed text equals a plain generate().
    import torch
    from llm_chat.model import end_of_turn_ids

    enc = tokenizer(P.render(tokenizer, dialog("hi"), True), add_special_tokens=False, return_tensors="pt")
    # What stream_chat generated before it ran on the serving engine: plain greedy generate() kwargs.
    plain = dict(
        eos_token_id=end_of_turn_ids(tokenizer), pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    with torch.no_grad():
        out = tiny_model.generate(**enc, max_new_tokens=12, temperature=None, top_p=None, top_k=None, **plain)
    expected = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "".join(chunks) == expected.split("<|im_end|>")[0]


def test_stop_string_ends_the_answer(tokenizer, tiny_model):
    full = "".join(P.stream_chat(tiny_model, tokenizer, dialog("hi"), max_new_tokens=12, temperature=0))
    assert len(full) >= 3
    stop = full[2:4] if len(full) >= 4 else full[2:]
    stats = {}
    cut = "".join(
        P.stream_chat(
            tiny_model, tokenizer, dialog("hi"), max_new_tokens=12, temperature=0, stop=[stop], stats=stats
        )
    )
    assert cut == full[: full.index(stop)] and stats["finish_reason"] == "stop"


def test_closing_the_stream_cancels_generation(tokenizer, tiny_model):
    gen = P.stream_chat(tiny_model, tokenizer, dialog("hi"), max_new_tokens=2000, temperature=0.0)
    next(gen)
    gen.close()  # must return promptly (the generate thread is cancelled and joined)


def test_chat_prompt_one_shot_with_tiny_config(capsys):
    assert main(["chat", "--config", "tiny", "--prompt", "hi", "--max_new_tokens", "5"]) == 0
    captured = capsys.readouterr()
    assert "random tiny qwen2" in captured.err
    assert captured.out.endswith("\n")


def test_chat_repl_reset_system_and_eof(monkeypatch, capsys):
    calls = []
    real = P.stream_chat

    def spy(model, tok, messages, **kw):
        calls.append([m["role"] for m in messages])
        yield from real(model, tok, messages, **kw)

    monkeypatch.setattr(P, "stream_chat", spy)
    monkeypatch.setattr(
        sys, "stdin", io.StringIO("hello\nagain\n/reset\nfresh\n/system 你是助手\nq\n/bogus\n")
    )
    assert main(["chat", "--config", "tiny", "--max_new_tokens", "3"]) == 0  # EOF ends the session cleanly
    assert calls == [
        ["user"],
        ["user", "assistant", "user"],
        ["user"],  # /reset dropped the history
        ["system", "user"],  # /system set a system message (and reset)
    ]
    err = capsys.readouterr().err
    assert "[history cleared]" in err and "unknown command /bogus" in err


def test_bare_command_opens_chat(monkeypatch):
    from llm_chat.cli import APP

    seen = {}
    monkeypatch.setattr(P, "chat", lambda cfg: seen.setdefault("cfg", cfg) and 0)
    assert APP.default_command == "chat"
    assert main(["--config", "tiny", "--prompt", "x"]) == 0
    assert seen["cfg"].infer.prompt == "x"


def test_chat_without_a_model_says_what_to_do(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["chat", "--model_name_or_path", "no-such-org/no-such-model", "--prompt", "hi"])
    err = capsys.readouterr().err
    assert rc == 2 and "no model available" in err and "--config tiny" in err and "Traceback" not in err


def test_read_prompts(tmp_path):
    (tmp_path / "p.txt").write_text("一\n\n二\n")
    (tmp_path / "p.jsonl").write_text(
        '{"question": "三"}\n{"messages": [{"role": "user", "content": "四"}, {"role": "assistant", "content": "x"}]}\n'
    )
    prompts = P.read_prompts([str(tmp_path / "p.txt"), str(tmp_path / "p.jsonl"), "五"])
    assert [p[-1]["content"] for p in prompts] == ["一", "二", "三", "四", "五"]
    (tmp_path / "bad.jsonl").write_text('{"x": 1}\n')
    from lora_shared.errors import UsageError

    with pytest.raises(UsageError, match="bad.jsonl:1"):
        P.read_prompts([str(tmp_path / "bad.jsonl")])


def test_scoring_is_plain_greedy_while_chat_keeps_its_repetition_penalty():
    """eval/compare score plain greedy answers (penalty 1.0); chat/predict keep the sampling defaults."""
    from llm_chat.cli import APP
    from llm_chat.predict import gen_options
    from lora_shared.cli import build_config

    def infer(command, *flags):
        cfg, _ = build_config(
            APP, next(c for c in APP.commands if c.name == command), ["--config", "tiny", *flags]
        )
        return next(g for g in cfg.groups() if hasattr(g, "score_repetition_penalty"))

    scored = gen_options(infer("compare"), greedy=True)
    assert scored["repetition_penalty"] == 1.0 and scored["temperature"] == 0.0
    chat = gen_options(infer("chat"))
    assert chat["repetition_penalty"] == 1.1 and chat["temperature"] == 0.7
    assert (
        gen_options(infer("eval", "--score_repetition_penalty", "1.2"), greedy=True)["repetition_penalty"]
        == 1.2
    )


def test_chat_generates_through_the_serving_engine(monkeypatch, tokenizer, tiny_model):
    """One implementation: stream_chat (chat, predict, eval, compare) runs the engine's generate_rows, and
    gives the same greedy text as the server's Engine for the same prompt."""
    from llm_chat.serving import engine as E

    calls = []
    real = E.generate_rows

    def spy(model, tok, jobs, **kw):
        calls.append([j.req for j in jobs])
        return real(model, tok, jobs, **kw)

    monkeypatch.setattr(E, "generate_rows", spy)
    text = "".join(
        P.stream_chat(tiny_model, tokenizer, dialog("hi"), max_new_tokens=8, temperature=0, stop=["x"])
    )
    (req,) = calls[0]
    assert req.max_tokens == 8 and req.temperature == 0.0 and req.stop == ["x"]
    eng = E.Engine(tiny_model, tokenizer, base_name="tiny")
    try:
        events = list(eng.stream(E.GenRequest(req.prompt_ids, None, 8, temperature=0.0, stop=["x"])))
    finally:
        eng.close()
    assert len(calls) == 2 and text == "".join(e[1] for e in events if e[0] == "delta")


def test_a_generation_error_reaches_the_caller(tokenizer, tiny_model, monkeypatch):
    """An exception inside generate (e.g. out of memory) is raised from stream_chat itself, not swallowed."""

    def boom(*a, **kw):
        raise MemoryError("no room")

    monkeypatch.setattr(tiny_model, "generate", boom)
    with pytest.raises(MemoryError, match="no room"):
        list(P.stream_chat(tiny_model, tokenizer, dialog("hi"), max_new_tokens=4, temperature=0))


def test_eval_answers_in_batches_match_one_at_a_time(monkeypatch, tokenizer, tiny_model):
    """eval's batched greedy answers (left-padded rows of different lengths) are the unbatched answers, and
    batch_size rows go into each generate."""
    prompts = [dialog(q) for q in ("hi", "a much longer question " * 4, "ok?", "two words")]
    single = [P.answer(tiny_model, tokenizer, p, max_new_tokens=6, temperature=0)["text"] for p in prompts]
    sizes = []
    real = P.generate_rows

    def spy(model, tok, jobs, **kw):
        sizes.append(len(jobs))
        return real(model, tok, jobs, **kw)

    monkeypatch.setattr(P, "generate_rows", spy)
    batched = P.answer_many(tiny_model, tokenizer, prompts, batch_size=3, max_new_tokens=6, temperature=0)
    assert sizes == [3, 1]
    assert [r["text"] for r in batched] == single
    assert all(r["completion_tokens"] <= 6 and r["finish_reason"] in ("stop", "length") for r in batched)
