"""The OpenAI-compatible server, driven by the real `openai` client (and raw httpx) on a loopback port.

The model is a tiny random Llama with two random LoRA adapters and a byte-level BPE tokenizer with a ChatML
template, all built in-process. Its lm_head is scaled up so greedy decoding has clear winners: outputs are
then deterministic enough to compare batched vs. sequential and streamed vs. non-streamed generations.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

API_KEY = "test-key-123"
ADAPTERS = ("tuned-a", "tuned-b")
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_chat_model(adapters=ADAPTERS, seed: int = 0):
    """(peft model with `adapters`, tokenizer): a 2-layer random Llama, nothing downloaded."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [
        "hello how are you today",
        "the quick brown fox jumps over the lazy dog",
        "user assistant system",
    ]
    bpe.train_from_iterator(corpus * 5, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # peaky logits: argmax is stable under padding/batching noise
        # Zero logits for eos (so lengths are predictable) and for tokens that are not printable ASCII
        # (lone UTF-8 bytes): the scaled rows outscore them, so answers are readable text.
        for tid in range(len(tok)):
            piece = tok.decode([tid])
            if tid == tok.eos_token_id or not (piece.isascii() and piece.strip() and piece.isprintable()):
                model.lm_head.weight[tid] = 0.0
    lora = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    if not adapters:
        return model, tok
    peft_model = get_peft_model(model, LoraConfig(**lora), adapter_name=adapters[0])
    for name in adapters[1:]:
        peft_model.add_adapter(name, LoraConfig(**lora))
    return peft_model, tok


@pytest.fixture(scope="module")
def engine():
    import torch
    from llm_chat.serving.engine import Engine

    # One intra-op thread: a 32-wide model gains nothing from two, and on a contended 2-core box the
    # thread hand-offs make each step ~10x slower.
    torch.set_num_threads(1)
    model, tok = build_tiny_chat_model()
    eng = Engine(model, tok, base_name="tiny-base", max_queue=64, max_batch_size=8)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def settings():
    from llm_chat.serving.schema import ServeSettings

    return ServeSettings(api_key=API_KEY, max_tokens_limit=1800, max_messages=16, max_request_bytes=20_000)


@pytest.fixture(scope="module")
def server(engine, settings):
    from llm_chat.serving.api import create_app
    from llm_chat.testing import ServerThread

    with ServerThread(create_app(engine, settings)) as url:
        yield url


@pytest.fixture()
def client(server):
    import openai

    with openai.OpenAI(base_url=server + "/v1", api_key=API_KEY, max_retries=0, timeout=60) as c:
        yield c


def _chat(client, content="hello there", model="tiny-base", **kw):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], **{"temperature": 0, **kw}
    )


def _wait_idle(engine, timeout=30.0):
    deadline = time.time() + timeout
    while engine.in_flight or engine.queue_depth():
        assert time.time() < deadline, "engine never went idle"
        time.sleep(0.02)


# ------------------------------------------------------------------------------------------------------------
# Happy paths with the openai client
# ------------------------------------------------------------------------------------------------------------
def test_models_lists_base_and_adapters(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["tiny-base", *ADAPTERS]
    assert client.models.retrieve("tuned-a").id == "tuned-a"


def test_non_stream_completion_has_text_and_usage(client, engine):
    r = _chat(client, max_tokens=7)
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.model == "tiny-base"
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    prompt = engine.encode_chat([{"role": "user", "content": "hello there"}])
    assert r.usage.prompt_tokens == len(prompt)
    assert r.usage.completion_tokens == 7
    assert r.usage.total_tokens == len(prompt) + 7


def test_stream_matches_non_stream_and_ends_properly(client):
    full = _chat(client, "the quick fox", max_tokens=12).choices[0].message.content
    chunks = list(
        _chat(client, "the quick fox", max_tokens=12, stream=True, stream_options={"include_usage": True})
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full  # greedy: the stream carries exactly the same answer
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_content_parts_and_system_messages_are_accepted(server, engine):
    msgs = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]},
    ]
    r = httpx.post(
        server + "/v1/chat/completions",
        json={"model": "tiny-base", "messages": msgs, "max_tokens": 3, "temperature": 0},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    want = engine.encode_chat(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    )
    assert r.json()["usage"]["prompt_tokens"] == len(want)


def test_raw_sse_format_ends_with_done(server):
    body = {
        "model": "tuned-b",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": 5,
    }
    with httpx.stream(
        "POST", server + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_model_field_picks_the_adapter(client):
    outs = {
        m: _chat(client, "hello", model=m, max_tokens=8).choices[0].message.content
        for m in ("tiny-base", *ADAPTERS)
    }
    assert len(set(outs.values())) == 3, outs  # random LoRA weights: each adapter answers differently
    # And switching back and forth is stable (set_adapter / disable_adapter leave no residue).
    assert (
        _chat(client, "hello", model="tiny-base", max_tokens=8).choices[0].message.content
        == outs["tiny-base"]
    )
    assert _chat(client, "hello", model="tuned-a", max_tokens=8).choices[0].message.content == outs["tuned-a"]


def test_stop_sequence_cuts_the_answer(client):
    full = _chat(client, "lazy dog", max_tokens=24).choices[0].message.content
    stop = full[6:9]
    assert stop and stop in full
    r = _chat(client, "lazy dog", max_tokens=24, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[: full.index(stop)]
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in _chat(client, "lazy dog", max_tokens=24, stop=stop, stream=True)
    )
    assert streamed == full[: full.index(stop)]


def test_concurrent_requests_do_not_corrupt_each_other(client, engine):
    """Different prompts and adapters at once (batched by the worker) give the sequential answers."""
    cases = [(f"prompt number {i} " * (1 + i % 3), ("tiny-base", *ADAPTERS)[i % 3]) for i in range(9)]
    expected = [_chat(client, p, model=m, max_tokens=10).choices[0].message.content for p, m in cases]
    batches_before = engine.stats["batches"]
    results: list = [None] * len(cases)

    def worker(i):
        p, m = cases[i]
        results[i] = _chat(client, p, model=m, max_tokens=10).choices[0].message.content

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == expected
    assert engine.stats["batches"] - batches_before < len(cases)  # some requests shared a batch


def test_greedy_and_sampled_requests_share_a_batch(engine):
    """Rows keep their own temperature/top-p: greedy rows in a sampled batch still give the greedy answer."""
    from llm_chat.serving.engine import GenRequest

    _wait_idle(engine)
    prompts = [engine.encode_chat([{"role": "user", "content": f"row {i}"}]) for i in range(6)]

    def text(events):
        return "".join(e[1] for e in events if e[0] == "delta")

    greedy_alone = [
        text(list(engine.stream(GenRequest(p, "tuned-a", 8, temperature=0.0)))) for p in prompts[:3]
    ]
    events: list[list] = [[] for _ in prompts]
    blocker = engine.submit(_long_request(engine, "tuned-b"), lambda ev: None)  # holds the worker
    deadline = time.time() + 30
    while blocker.generated == 0:  # its generate() is running (and counted)
        assert time.time() < deadline
        time.sleep(0.01)
    batches = engine.stats["batches"]
    for i, p in enumerate(prompts):
        temp, top_p = (0.0, 1.0) if i < 3 else (1.3, 0.7)
        engine.submit(GenRequest(p, "tuned-a", 8, temperature=temp, top_p=top_p), events[i].append)
    blocker.cancel.set()
    _wait_idle(engine)
    assert engine.stats["batches"] == batches + 1  # all six rows ran in one generate call
    assert [text(e) for e in events[:3]] == greedy_alone
    assert all(e[-1][0] == "end" and e[-1][2]["completion_tokens"] == 8 for e in events)


# ------------------------------------------------------------------------------------------------------------
# Errors: always 4xx with an OpenAI-style body, never a 500
# ------------------------------------------------------------------------------------------------------------
def test_wrong_or_missing_key_is_401(server):
    import openai

    with openai.OpenAI(base_url=server + "/v1", api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        with pytest.raises(openai.AuthenticationError):
            _chat(bad)
    r = httpx.post(server + "/v1/chat/completions", json={})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server + "/health").json()["status"] == "ok"  # health needs no key


def test_openai_client_bad_requests(client):
    import openai

    with pytest.raises(openai.BadRequestError):
        _chat(client, n=2)
    with pytest.raises(openai.BadRequestError):
        _chat(client, max_tokens=5000)
    with pytest.raises(openai.BadRequestError):
        _chat(client, temperature=3.0)
    with pytest.raises(openai.NotFoundError):
        _chat(client, model="no-such-model")


GOOD = {"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"{not json", 400),
        (b"", 400),
        (b"[1, 2]", 400),
        (b"\xff\xfe", 400),
        (json.dumps({**GOOD, "messages": "hi"}).encode(), 400),
        (json.dumps({**GOOD, "messages": []}).encode(), 400),
        (json.dumps({**GOOD, "messages": [{"role": "wizard", "content": "x"}]}).encode(), 400),
        (json.dumps({**GOOD, "messages": [{"role": "user", "content": 5}]}).encode(), 400),
        (json.dumps({**GOOD, "messages": [{"role": "user", "content": "x"}] * 17}).encode(), 400),
        (json.dumps({**GOOD, "max_tokens": 0}).encode(), 400),
        (json.dumps({**GOOD, "max_tokens": "many"}).encode(), 400),
        (json.dumps({**GOOD, "max_tokens": True}).encode(), 400),
        (json.dumps({**GOOD, "stream": "yes"}).encode(), 400),
        (json.dumps({**GOOD, "temperature": float("nan")}).encode(), 400),
        (b"[" * 5000 + b"]" * 5000, 400),
        (json.dumps({**GOOD, "top_p": 0}).encode(), 400),
        (json.dumps({**GOOD, "stop": ["a", "b", "c", "d", "e"]}).encode(), 400),
        (json.dumps({**GOOD, "tools": []}).encode(), 400),
        (json.dumps({**GOOD, "presence_penalty": 1.0}).encode(), 400),
        (json.dumps({**GOOD, "model": None}).encode(), 400),
        (json.dumps({**GOOD, "model": "nope"}).encode(), 404),
        (json.dumps({**GOOD, "messages": [{"role": "user", "content": "x" * 30_000}]}).encode(), 413),
        (json.dumps({**GOOD, "messages": [{"role": "user", "content": "word " * 3000}]}).encode(), 400),
    ],
)
def test_bad_bodies_get_openai_error_bodies(server, raw, status):
    r = httpx.post(
        server + "/v1/chat/completions",
        content=raw,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]


def test_unknown_routes_and_methods_are_json_errors(server):
    r = httpx.get(server + "/v1/nope")
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(server + "/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 405 and "error" in r.json()


# ------------------------------------------------------------------------------------------------------------
# Queue, disconnects, load
# ------------------------------------------------------------------------------------------------------------
def _long_request(engine, adapter=None, max_tokens=1500):
    from llm_chat.serving.engine import GenRequest

    prompt = engine.encode_chat([{"role": "user", "content": "keep talking"}])
    return GenRequest(prompt, adapter, max_tokens, temperature=0.0)


def test_full_queue_returns_429(client, engine):
    import openai

    _wait_idle(engine)
    events: list = []
    busy = engine.submit(_long_request(engine), events.append)  # occupies the worker
    deadline = time.time() + 30
    while engine.in_flight == 0:
        assert time.time() < deadline
        time.sleep(0.01)
    old = engine.max_queue
    engine.max_queue = 2
    waiting = [engine.submit(_long_request(engine, "tuned-a", 5), events.append) for _ in range(2)]
    try:
        with pytest.raises(openai.RateLimitError) as exc:
            _chat(client, max_tokens=2)
        assert exc.value.status_code == 429
        assert exc.value.response.headers.get("retry-after") == "1"
    finally:
        engine.max_queue = old
        for job in (busy, *waiting):
            job.cancel.set()
    _wait_idle(engine)
    assert busy.generated < 1500  # cancelling really stopped the long generation
    assert _chat(client, max_tokens=2).choices[0].message.content is not None  # and the server recovered


def test_client_disconnect_stops_generation(server, engine):
    _wait_idle(engine)
    before = dict(engine.stats)
    body = {
        "model": "tiny-base",
        "messages": [{"role": "user", "content": "go on"}],
        "stream": True,
        "max_tokens": 1500,
    }
    with httpx.stream(
        "POST", server + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as r:
        it = r.iter_lines()
        got = [next(it) for _ in range(6)]  # a few chunks arrived: generation is running
        assert any('"content"' in line for line in got)
    # Leaving the `with` closed the connection mid-stream.
    _wait_idle(engine)
    assert engine.stats["cancelled"] == before["cancelled"] + 1
    assert engine.stats["completion_tokens"] - before["completion_tokens"] < 1500


def test_non_stream_disconnect_stops_generation(server, engine):
    _wait_idle(engine)
    before = dict(engine.stats)
    body = {"model": "tiny-base", "messages": [{"role": "user", "content": "go on"}], "max_tokens": 1500}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=httpx.Timeout(30, read=0.3),
        )
    _wait_idle(engine)
    assert engine.stats["cancelled"] == before["cancelled"] + 1
    assert engine.stats["completion_tokens"] - before["completion_tokens"] < 1500


def test_load_32_streaming_clients(server, engine):
    from llm_chat.testing import run_load

    t0 = time.time()
    result = run_load(
        server,
        concurrency=32,
        requests_per_client=2,
        model="tuned-a",
        api_key=API_KEY,
        max_tokens=6,
        timeout=60,
    )
    assert result["errors"] == 0, result
    assert result["requests"] == 64 and result["rps"] > 0
    assert result["p50_ms"] <= result["p95_ms"]
    assert time.time() - t0 < 60
    assert engine.stats["max_batch"] > 1  # concurrent streams were batched
    h = httpx.get(server + "/health").json()
    assert h["status"] == "ok" and h["queue"] == 0


# ------------------------------------------------------------------------------------------------------------
# Streaming details without a model, and the CLI wiring
# ------------------------------------------------------------------------------------------------------------
class _CharTokenizer:
    """decode(ids) = the characters with those code points: enough to drive RowState."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


def _row(stop, max_tokens=50):
    from llm_chat.serving.engine import GenRequest, Job, RowState

    out: list = []
    job = Job(GenRequest([1], None, max_tokens, stop=stop), out.append)
    return RowState(job, _CharTokenizer(), eos_ids={0}), out


def _feed(row, text):
    for ch in text:
        row.push(ord(ch))


def test_stop_string_prefix_is_held_back_then_released():
    row, out = _row(["ab"])
    _feed(row, "xa")
    assert "".join(e[1] for e in out) == "x"  # "a" might start "ab": not sent yet
    _feed(row, "c")
    assert "".join(e[1] for e in out) == "xac" and row.finished is None
    _feed(row, "zab")
    assert "".join(e[1] for e in out) == "xacz" and row.finished == "stop"
    _feed(row, "more")  # rows that finished ignore later tokens (batch neighbours still running)
    assert "".join(e[1] for e in out) == "xacz"


def test_multibyte_characters_are_never_split():
    from llm_chat.serving.engine import GenRequest, Job, RowState

    class ByteTokenizer:  # one token per UTF-8 byte, like a byte-level BPE on rare characters
        def decode(self, ids, skip_special_tokens=True):
            return bytes(ids).decode("utf-8", errors="replace")

    out: list = []
    row = RowState(Job(GenRequest([1], None, 50), out.append), ByteTokenizer(), eos_ids={0})
    for b in "a中文b".encode():
        row.push(b)
    row.flush()
    assert [e[1] for e in out] == ["a", "中", "文", "b"]


def test_eos_and_length_finish_rows():
    row, out = _row(["ab"])
    _feed(row, "hia")
    row.push(0)  # eos: the held-back "a" is released at the end, eos itself is not text
    row.flush()
    assert "".join(e[1] for e in out) == "hia" and row.finished == "stop"
    row, out = _row([], max_tokens=3)
    _feed(row, "abcdef")
    row.flush()
    assert "".join(e[1] for e in out) == "abc" and row.finished == "length"


def test_the_earliest_stop_string_wins_whatever_the_list_order():
    row, out = _row(["c", "abc"])
    _feed(row, "abc")  # both complete on "c": the answer ends before "abc", not before "c"
    assert "".join(e[1] for e in out) == "" and row.finished == "stop"


def test_end_of_turn_text_ends_the_answer():
    """A template whose <|im_end|> is not one token writes it as text: it ends the turn (chat did this,
    now the server does too, since both use RowState)."""
    row, out = _row([])
    _feed(row, "hi<|im_end|>more")
    row.flush()
    assert "".join(e[1] for e in out) == "hi" and row.finished == "stop"


def test_rows_with_another_repetition_penalty_get_their_own_batch():
    from llm_chat.serving.engine import GenRequest

    a, b = GenRequest([1], "x", 5, temperature=0.0), GenRequest([1], "x", 5, temperature=0.9, top_k=3)
    assert a.batch_key() == b.batch_key()  # sampling settings are per row
    assert GenRequest([1], "x", 5, repetition_penalty=1.2).batch_key() != a.batch_key()


def test_top_k_one_samples_the_greedy_answer(engine):
    """RowSampling's per-row top-k: with k=1 a hot temperature still gives the greedy tokens."""
    from llm_chat.serving.engine import GenRequest

    _wait_idle(engine)
    prompt = engine.encode_chat([{"role": "user", "content": "top k"}])

    def text(req):
        return "".join(e[1] for e in engine.stream(req) if e[0] == "delta")

    greedy = text(GenRequest(prompt, "tuned-a", 10, temperature=0.0))
    assert text(GenRequest(prompt, "tuned-a", 10, temperature=2.0, top_k=1)) == greedy
    hot = {text(GenRequest(prompt, "tuned-a", 10, temperature=2.0, seed=s)) for s in range(4)}
    assert hot != {greedy}  # without top-k the same temperature wanders off


def test_cli_tiny_config_builds_a_servable_engine(monkeypatch):
    pytest.importorskip("llm_chat.cli")
    from llm_chat.cli import APP
    from llm_chat.config import ServeArgs, get_group
    from llm_chat.serving.schema import settings_from
    from llm_chat.serving.server import build_engine
    from lora_shared.cli import build_config

    serve_cmd = next(c for c in APP.commands if c.name == "serve")
    monkeypatch.setenv("LLM_CHAT_API_KEY", "from-env")
    cfg, _ = build_config(APP, serve_cmd, ["--config", "tiny", "--max_queue", "3", "--port", "9999"])
    args = get_group(cfg, ServeArgs)
    assert (args.host, args.port) == ("127.0.0.1", 9999)  # loopback unless asked
    settings = settings_from(args)
    assert settings.max_queue == 3 and settings.api_key == "from-env"
    eng = build_engine(cfg, settings.max_queue)
    try:
        assert eng.model_ids() == ["qwen2-random"]
        req_ids = eng.encode_chat([{"role": "user", "content": "hi"}])
        from llm_chat.serving.engine import GenRequest

        events = list(eng.stream(GenRequest(req_ids, None, 4, temperature=0.0)))
        assert events[-1][0] == "end" and events[-1][2]["completion_tokens"] <= 4
    finally:
        eng.close()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "webui"])
def test_cli_serve_streams_sse_over_curl_like_request(tmp_path, command):
    """`llm-chat serve|webui --config tiny` as a real process: stream one answer (and for webui, load the
    page from the same port), then SIGTERM exits cleanly."""
    pytest.importorskip("llm_chat.cli")
    import signal
    import subprocess
    import sys

    from llm_chat.testing import free_port

    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_chat", command, "--config", "tiny", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 240
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
        body = {"model": "qwen2-random", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            lines = [line for line in r.iter_lines() if line]
        assert lines[-1] == "data: [DONE]" and len(lines) > 3
        if command == "webui":
            page = httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=True, timeout=60)
            assert page.status_code == 200 and str(page.url).endswith("/ui/") and "<html" in page.text.lower()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    # uvicorn shuts down gracefully, then re-raises the signal it caught (so -15 is the normal exit).
    assert code in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (tmp_path / "serve.log").read_text()


def test_close_cancels_the_running_batch_and_fails_waiting_jobs():
    from llm_chat.serving.engine import Engine, GenRequest
    from llm_chat.serving.schema import QueueFull

    model, tok = build_tiny_chat_model(adapters=())
    eng = Engine(model, tok, base_name="m")
    prompt = eng.encode_chat([{"role": "user", "content": "x"}])
    events: list = []
    running = eng.submit(GenRequest(prompt, None, 1500, temperature=0.0), events.append)
    deadline = time.time() + 30
    while eng.in_flight == 0:
        assert time.time() < deadline
        time.sleep(0.01)
    waiting = eng.submit(GenRequest(prompt, None, 5, temperature=0.0, top_p=0.5), events.append)
    t0 = time.time()
    eng.close()
    assert time.time() - t0 < 10 and not eng.alive()
    assert running.cancel.is_set() and running.generated < 1500
    assert ("error", "server is shutting down") in events and waiting.generated == 0
    with pytest.raises(QueueFull):
        eng.submit(GenRequest(prompt, None, 5), events.append)
