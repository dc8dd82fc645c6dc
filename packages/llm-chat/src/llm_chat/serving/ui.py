"""Gradio web UI (`llm-chat webui`): streaming chat, base-vs-tuned side by side, generation controls,
adapter picker, a Train tab (launch any app's `train`, live curves and log, stop/resume, load the finished
adapter into Chat/Compare; serving/training.py runs it) and a self-refreshing memory/device/training panel.

The UI talks to the same `engine.Engine` as the HTTP API (one model, one worker thread, one queue):
`mount_ui` puts it on the API app, which is what `llm-chat webui` (= `serve` with the UI) does: the UI at
/ui/ and the OpenAI-compatible API at /v1 on the same loopback port.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from .engine import Engine, GenRequest
from .schema import ApiError, QueueFull
from .training import KNOBS, RunManager, available_apps, bundled_configs, train_argv

logger = logging.getLogger(__name__)

# No telemetry calls from a tool that may run offline or on private data.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

UI_PATH = "/ui"
CSS = """
#chat-panel .message { font-size: 15px; }
.compare-out textarea { font-family: ui-monospace, monospace; }
"""


# ----------------------------------------------------------------------------------------------------------
# Plain functions behind the widgets (tested without a browser)
# ----------------------------------------------------------------------------------------------------------
def parse_stops(text: str | None) -> list[str]:
    """'###, User:' -> ['###', 'User:'] (at most 4, like the API; `\\n` means a newline)."""
    stops = [s.strip().replace("\\n", "\n") for s in (text or "").split(",")]
    return [s for s in stops if s][:4]


def make_request(
    engine: Engine,
    model_id: str,
    messages: list[dict],
    *,
    max_tokens: int,
    temperature: float,
    top_p: float,
    stop: list[str] | None = None,
) -> GenRequest:
    """A GenRequest for `engine` (raises ApiError on an unknown model or an over-long prompt)."""
    adapter = engine.resolve(model_id)
    prompt = engine.encode_chat(messages)
    room = engine.context_length - len(prompt)
    if room < 1:
        raise ApiError(
            400, f"the conversation is {len(prompt)} tokens; the context is {engine.context_length}"
        )
    return GenRequest(
        prompt,
        adapter,
        max(1, min(int(max_tokens), room)),
        temperature=float(temperature),
        top_p=min(1.0, max(0.01, float(top_p))),
        stop=list(stop or []),
    )


def stream_text(engine: Engine, req: GenRequest, cancel: threading.Event | None = None):
    """Yield (text so far, stats dict) while `req` generates; stats has tokens, seconds, finish."""
    text, t0, first = "", time.perf_counter(), None
    for ev in engine.stream(req, cancel):
        if ev[0] == "delta":
            first = first or time.perf_counter()
            text += ev[1]
            yield text, None
        elif ev[0] == "error":
            raise RuntimeError(ev[1])
        else:
            _, reason, usage = ev
            secs = time.perf_counter() - t0
            toks = usage["completion_tokens"]
            yield (
                text,
                {
                    "finish": reason,
                    "tokens": toks,
                    "seconds": round(secs, 2),
                    "tok_per_s": round(toks / secs, 1) if secs > 0 else 0.0,
                    "ttft_s": round((first or time.perf_counter()) - t0, 2),
                },
            )


def _rss_mb() -> float | None:
    try:  # Linux: current resident set size
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, KiB on Linux
    except Exception:  # pragma: no cover - non-Unix
        return None


def system_info(engine: Engine) -> dict[str, Any]:
    """What the memory/device panel shows: device, memory, model size, engine counters."""
    import torch

    model = engine.model
    n_params = sum(p.numel() for p in model.parameters())
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    info: dict[str, Any] = {
        "device": str(engine.device),
        "torch_threads": torch.get_num_threads(),
        "process_rss_mb": round(_rss_mb() or 0.0, 1),
        "model": engine.base_name,
        "adapters": engine.adapters,
        "parameters_m": round(n_params / 1e6, 3),
        "weights_mb": round(n_bytes / 2**20, 1),
        "dtype": dtype,
        "context_length": engine.context_length,
        "queue": engine.queue_depth(),
        "in_flight": engine.in_flight,
        **{f"served_{k}": v for k, v in engine.stats.items()},
    }
    if engine.device.type == "cuda":
        free, total = torch.cuda.mem_get_info(engine.device)
        info.update(
            gpu=torch.cuda.get_device_name(engine.device),
            gpu_allocated_mb=round(torch.cuda.memory_allocated(engine.device) / 2**20, 1),
            gpu_peak_mb=round(torch.cuda.max_memory_allocated(engine.device) / 2**20, 1),
            gpu_free_mb=round(free / 2**20, 1),
            gpu_total_mb=round(total / 2**20, 1),
        )
    return info


def _info_markdown(info: dict[str, Any]) -> str:
    rows = "\n".join(f"| {k} | {', '.join(v) if isinstance(v, list) else v} |" for k, v in info.items())
    return "| | value |\n|---|---|\n" + rows


def training_summary(st: dict[str, Any]) -> dict[str, Any]:
    """The System tab's view of the training run: app, state, step/max, loss, elapsed."""
    if st.get("state", "idle") == "idle":
        return {"training": "none"}
    out = {
        "training": f"{st['app']} ({st['state']})",
        "training_step": f"{st['step']}/{st['max_steps'] or '?'}",
        "training_loss": "-" if st.get("loss") is None else round(float(st["loss"]), 4),
        "training_elapsed_s": st["elapsed_s"],
    }
    if st.get("eval_loss") is not None:
        out["training_eval_loss"] = round(float(st["eval_loss"]), 4)
    return out


def status_line(st: dict[str, Any]) -> str:
    """One line for the Train tab: the state and progress, or the CLI's error line."""
    state = st.get("state", "idle")
    if state == "idle":
        return "no run yet"
    progress = f"step {st['step']}/{st['max_steps'] or '?'}"
    loss = "" if st.get("loss") is None else f" · loss {float(st['loss']):.4f}"
    head = f"**{state}** · `{st['app']}` · {progress}{loss} · {st['elapsed_s']} s"
    if st.get("error"):
        return f"{head}\n\n**error:** `{st['error']}`"
    if state == "finished":
        return f"{head} · adapter in `{st['adapter_dir']}`"
    return head


def curve_figure(rows: list[dict]):
    """The Train tab's loss / eval-loss curves as a matplotlib figure (None before the first row)."""
    df = curve_frame(rows)
    if df.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    for name, part in df.groupby("series", sort=False):
        ax.plot(part["step"], part["value"], marker="o", markersize=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    plt.close(fig)  # gradio renders it; pyplot must not keep every figure alive
    return fig


def curve_frame(rows: list[dict]):
    """metrics.jsonl rows -> a long DataFrame (step, value, series) for gr.LinePlot: loss and eval_loss."""
    import pandas as pd

    points = [
        {"step": int(r["step"]), "value": float(r[key]), "series": key}
        for r in rows
        for key in ("loss", "eval_loss")
        if isinstance(r.get(key), int | float)
    ]
    return pd.DataFrame(points, columns=["step", "value", "series"])


# ----------------------------------------------------------------------------------------------------------
# The Blocks app
# ----------------------------------------------------------------------------------------------------------
def build_ui(
    engine: Engine,
    *,
    max_tokens: int = 256,
    temperature: float = 0.7,
    top_p: float = 0.9,
    max_tokens_limit: int = 2048,
    runs: RunManager | None = None,
):
    """The Gradio Blocks for `engine` (not launched: mount it with `mount_ui` or run `webui`)."""
    import gradio as gr

    if runs is None:
        import atexit

        runs = RunManager()
        atexit.register(runs.shutdown)  # the run has its own session: the server's Ctrl-C does not reach it
    apps = available_apps()
    models = engine.model_ids()
    tuned = engine.adapters[0] if engine.adapters else engine.base_name
    limit = max(1, min(max_tokens_limit, engine.context_length - 1))

    with gr.Blocks(title="llm-chat", analytics_enabled=False) as demo:
        gr.Markdown(f"### llm-chat · `{engine.base_name}` · adapters: {', '.join(engine.adapters) or 'none'}")
        with gr.Row():
            # Generation controls shared by both tabs.
            with gr.Column(scale=1, min_width=240):
                model_dd = gr.Dropdown(models, value=tuned, label="Model / adapter", elem_id="model-picker")
                system = gr.Textbox(label="System prompt", lines=2, elem_id="system-prompt")
                max_new = gr.Slider(1, limit, value=min(max_tokens, limit), step=1, label="Max new tokens")
                temp = gr.Slider(0.0, 2.0, value=temperature, step=0.05, label="Temperature (0 = greedy)")
                topp = gr.Slider(0.05, 1.0, value=top_p, step=0.05, label="Top-p")
                stops = gr.Textbox(label="Stop sequences (comma-separated)", elem_id="stops")
            with gr.Column(scale=3):
                with gr.Tab("Chat"):
                    chatbot = gr.Chatbot(
                        label="Chat", height=420, elem_id="chat-panel", feedback_options=None
                    )
                    with gr.Row():
                        msg = gr.Textbox(
                            placeholder="Type a message, Enter to send",
                            show_label=False,
                            scale=5,
                            elem_id="chat-input",
                        )
                        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
                    with gr.Row():
                        stop_btn = gr.Button("Stop", elem_id="chat-stop")
                        clear = gr.Button("Clear", elem_id="chat-clear")
                    status = gr.Markdown("", elem_id="chat-status")
                with gr.Tab("Compare"):
                    gr.Markdown("The same prompt, answered by two models (e.g. base vs tuned).")
                    cmp_prompt = gr.Textbox(label="Prompt", lines=2, elem_id="compare-prompt")
                    with gr.Row():
                        left_dd = gr.Dropdown(
                            models, value=engine.base_name, label="Left", elem_id="compare-left"
                        )
                        right_dd = gr.Dropdown(models, value=tuned, label="Right", elem_id="compare-right")
                    cmp_btn = gr.Button("Compare", variant="primary", elem_id="compare-run")
                    with gr.Row():
                        left_out = gr.Textbox(label="Left answer", lines=10, elem_classes="compare-out")
                        right_out = gr.Textbox(label="Right answer", lines=10, elem_classes="compare-out")
                    with gr.Row():
                        left_stats = gr.Markdown("", elem_id="compare-left-stats")
                        right_stats = gr.Markdown("", elem_id="compare-right-stats")
                with gr.Tab("Train"):
                    gr.Markdown(
                        "Runs `<app> train --config C --output_dir D [--flag value ...]` as its own process. "
                        "Empty knobs keep the config's value."
                    )
                    with gr.Row():
                        app_dd = gr.Dropdown(apps, value=apps[0], label="App", elem_id="train-app")
                        config_dd = gr.Dropdown(
                            bundled_configs(apps[0]),
                            value="tiny",
                            label="Config (bundled name or a YAML path)",
                            allow_custom_value=True,
                            elem_id="train-config",
                        )
                        out_box = gr.Textbox(
                            label="Output dir (empty = a new one under runs/)", elem_id="train-output"
                        )
                    knob_boxes = []
                    for i in range(0, len(KNOBS), 5):
                        with gr.Row():
                            for name, label in KNOBS[i : i + 5]:
                                knob_boxes.append(gr.Textbox(label=label, elem_id=f"knob-{name}"))
                    extra_box = gr.Textbox(
                        label="More flags (e.g. --max_length 512 --warmup_ratio 0.1)", elem_id="train-extra"
                    )
                    with gr.Row():
                        launch_btn = gr.Button("Launch", variant="primary", elem_id="train-launch")
                        stop_train = gr.Button("Stop (saves a checkpoint)", elem_id="train-stop")
                        resume_btn = gr.Button("Resume", elem_id="train-resume")
                        load_btn = gr.Button("Load adapter into Chat/Compare", elem_id="train-load")
                    # Action answers (the CLI's error line, "loaded ...") stay put; the status line is polled.
                    train_msg = gr.Markdown("", elem_id="train-message")
                    train_status = gr.Markdown("no run yet", elem_id="train-status")
                    train_plot = gr.Plot(label="Loss", elem_id="train-plot")
                    curve_rows = gr.State(-1)  # rows drawn so far: redraw only when metrics.jsonl grew
                    train_log = gr.Textbox(
                        label="Log (tail)", lines=12, max_lines=12, autoscroll=True, elem_id="train-log"
                    )
                with gr.Tab("System"):
                    sys_md = gr.Markdown(_info_markdown(system_info(engine)), elem_id="system-info")
                    refresh = gr.Button("Refresh", elem_id="system-refresh")

        cancel_state = gr.State(None)  # the running chat generation's cancel Event (per browser session)

        def _conversation(history: list[dict], system_text: str) -> list[dict]:
            msgs = [{"role": "system", "content": system_text}] if system_text and system_text.strip() else []
            return msgs + [{"role": m["role"], "content": _plain(m["content"])} for m in history]

        def user_turn(text: str, history: list | None):
            history = list(history or [])
            if text and text.strip():
                history.append({"role": "user", "content": text})
            return "", history

        def bot_turn(history, model_id, system_text, n, t, p, stop_text):
            history = list(history or [])
            if not history or history[-1]["role"] != "user":
                yield history, "", None
                return
            cancel = threading.Event()
            try:
                req = make_request(
                    engine,
                    model_id,
                    _conversation(history, system_text),
                    max_tokens=n,
                    temperature=t,
                    top_p=p,
                    stop=parse_stops(stop_text),
                )
                history.append({"role": "assistant", "content": ""})
                for text, stats in stream_text(engine, req, cancel):
                    history[-1] = {"role": "assistant", "content": text}
                    yield history, _stats_line(model_id, stats) if stats else "generating…", cancel
            except (ApiError, QueueFull, RuntimeError) as e:
                yield history, f"**error:** {getattr(e, 'message', e)}", None
            finally:
                cancel.set()

        def stop_chat(cancel):
            if cancel is not None:
                cancel.set()
            return "stopped"

        def compare(prompt, left, right, system_text, n, t, p, stop_text):
            if not prompt or not prompt.strip():
                yield "", "", "", ""
                return
            msgs = _conversation([{"role": "user", "content": prompt}], system_text)
            events: queue.Queue = queue.Queue()
            texts, stats = ["", ""], ["queued…", "queued…"]
            try:
                reqs = [
                    make_request(
                        engine, mid, msgs, max_tokens=n, temperature=t, top_p=p, stop=parse_stops(stop_text)
                    )
                    for mid in (left, right)
                ]
            except ApiError as e:
                yield "", "", f"**error:** {e.message}", ""
                return

            def pump(i: int) -> None:
                try:
                    for text, st in stream_text(engine, reqs[i]):
                        events.put((i, text, st))
                except Exception as e:
                    events.put((i, None, {"error": str(e)}))
                events.put((i, None, None))

            for i in (0, 1):  # both submitted now; the engine runs them one after the other
                threading.Thread(target=pump, args=(i,), daemon=True).start()
            done = 0
            while done < 2:
                i, text, st = events.get()
                if text is None and st is None:
                    done += 1
                    continue
                if text is not None:
                    texts[i] = text
                mid = (left, right)[i]
                stats[i] = (
                    f"**error:** {st['error']}"
                    if st and "error" in st
                    else _stats_line(mid, st)
                    if st
                    else "generating…"
                )
                yield texts[0], texts[1], stats[0], stats[1]

        def refresh_info():
            return _info_markdown({**system_info(engine), **training_summary(runs.status())})

        # -- Train tab: every action answers with the status line; errors are the CLI's own line --------
        def pick_app(app):
            names = bundled_configs(app)
            return gr.update(choices=names, value="tiny" if "tiny" in names else (names or [""])[0])

        def launch(app, config, out, extra, *knob_values):
            from lora_shared.errors import UsageError

            out = (out or "").strip() or str(Path("runs") / f"{app}-webui-{time.strftime('%Y%m%d-%H%M%S')}")
            try:
                argv = train_argv(app, config or "default", out, dict(zip(knob_names, knob_values)), extra)
                runs.launch(app, argv)
            except ValueError as e:  # shlex: an unclosed quote in the extra flags
                return f"**error:** `{app} train: error: more flags: {e}`"
            except UsageError as e:
                return f"**error:** `{_cli_line(app, e)}`"
            return f"launched `{runs.run.command}`"

        def resume():
            from lora_shared.errors import UsageError

            try:
                runs.resume()
            except UsageError as e:
                app = runs.run.app if runs.run else "train"
                return f"**error:** `{_cli_line(app, e)}`"
            return f"resumed `{runs.run.command}`"

        def poll(drawn):
            st = runs.status()
            rows = st.get("rows", [])
            fig = curve_figure(rows) if len(rows) != drawn else gr.update()
            return status_line(st), fig, st.get("log", ""), len(rows)

        def load_adapter():
            from ..model import adapter_name

            st = runs.status()
            if st.get("state") != "finished" or st.get("app") != "llm-chat":
                msg = (
                    "**error:** load needs a finished llm-chat run (this one is "
                    + st.get("state", "idle")
                    + ")"
                )
                return (msg, *[gr.update()] * 3)
            name, base = adapter_name(st["adapter_dir"]), adapter_name(st["adapter_dir"])
            n = 2
            while name in engine.model_ids():
                name, n = f"{base}-{n}", n + 1
            try:
                engine.add_adapter(name, st["adapter_dir"])
            except Exception as e:  # a run on another base (shapes differ): say so, keep serving
                return (f"**error:** cannot load {st['adapter_dir']}: {e}", *[gr.update()] * 3)
            ids = engine.model_ids()
            return (
                f"loaded adapter `{name}` into the engine: pick it in Chat or Compare",
                gr.update(choices=ids, value=name),
                gr.update(choices=ids),
                gr.update(choices=ids, value=name),
            )

        gen_inputs = [chatbot, model_dd, system, max_new, temp, topp, stops]
        for trigger in (msg.submit, send.click):
            trigger(user_turn, [msg, chatbot], [msg, chatbot], queue=False).then(
                bot_turn, gen_inputs, [chatbot, status, cancel_state]
            )
        stop_btn.click(stop_chat, [cancel_state], [status], queue=False)
        clear.click(lambda: ([], ""), None, [chatbot, status], queue=False)
        cmp_btn.click(
            compare,
            [cmp_prompt, left_dd, right_dd, system, max_new, temp, topp, stops],
            [left_out, right_out, left_stats, right_stats],
        )
        refresh.click(refresh_info, None, sys_md)
        demo.load(refresh_info, None, sys_md)

        knob_names = [name for name, _ in KNOBS]
        app_dd.change(pick_app, app_dd, config_dd, queue=False)
        launch_btn.click(launch, [app_dd, config_dd, out_box, extra_box, *knob_boxes], train_msg)
        stop_train.click(lambda: runs.stop(), None, train_msg, queue=False)
        resume_btn.click(resume, None, train_msg)
        load_btn.click(load_adapter, None, [train_msg, model_dd, left_dd, right_dd])
        # Live views: the run's curves/log every 1.5 s, the System panel every 2 s (no Refresh needed).
        gr.Timer(1.5).tick(
            poll, curve_rows, [train_status, train_plot, train_log, curve_rows], show_progress="hidden"
        )
        gr.Timer(2.0).tick(refresh_info, None, sys_md, show_progress="hidden")
    return demo


def _cli_line(app: str, e: Exception) -> str:
    """`<app> train: error: ...` exactly as the CLI prints it (validate() already returns that shape)."""
    text = str(e)
    return text if text.startswith(f"{app} train:") else f"{app} train: error: {text}"


def _plain(content: Any) -> str:
    """Gradio message content (a string, or a list of {type: text, text} parts in Gradio 5/6) as text."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, list | tuple):
        return "".join(_plain(c) for c in content)
    return "" if content is None else str(content)


def _stats_line(model_id: str, st: dict | None) -> str:
    if not st:
        return ""
    return (
        f"`{model_id}` · {st['tokens']} tokens in {st['seconds']} s ({st['tok_per_s']} tok/s, "
        f"first token {st['ttft_s']} s) · finish: {st['finish']}"
    )


def mount_ui(app, engine: Engine, path: str = UI_PATH, *, api_key: str | None = None, **ui_kwargs):
    """Mount the UI on a FastAPI app at `path`. With an API key, the UI asks for it as the password."""
    import gradio as gr

    blocks = build_ui(engine, **ui_kwargs)
    auth = None
    if api_key:
        import hmac

        def auth(username: str, password: str) -> bool:
            return hmac.compare_digest(password.encode(), api_key.encode())

    theme = gr.themes.Default(
        # System fonts: the default theme pulls Google Fonts, which an offline box cannot reach.
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "monospace"],
    )
    return gr.mount_gradio_app(
        app, blocks, path=path, auth=auth, ssr_mode=False, theme=theme, css=CSS, footer_links=[]
    )
