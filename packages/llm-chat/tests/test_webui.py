"""The Gradio web UI: its plain helpers, and the real page in headless Chromium driven by selenium.

The browser tests use Debian's `chromium` and `chromedriver` (`.ci/run` installs them). Without them they
skip, except in CI (`CI=true`), where they fail so the browser check cannot silently vanish.
Screenshots go to $LLM_CHAT_SCREENSHOT_DIR when set (packages/llm-chat/docs/ holds the ones shown there).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _tiny_builder():
    # The tiny model recipe lives in test_serve.py; load it by path (tests are not a package).
    spec = importlib.util.spec_from_file_location(
        "_llm_chat_test_serve", Path(__file__).with_name("test_serve.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build_tiny_chat_model


@pytest.fixture(scope="module")
def engine():
    import torch
    from llm_chat.serving.engine import Engine

    torch.set_num_threads(1)
    model, tok = _tiny_builder()()
    eng = Engine(model, tok, base_name="tiny-base", max_queue=8, max_batch_size=4)
    yield eng
    eng.close()


def _greedy(engine, model_id, content, max_tokens):
    from llm_chat.serving.ui import make_request, stream_text

    req = make_request(
        engine,
        model_id,
        [{"role": "user", "content": content}],
        max_tokens=max_tokens,
        temperature=0.0,
        top_p=1.0,
    )
    return list(stream_text(engine, req))


# ------------------------------------------------------------------------------------------------------------
# Helpers behind the widgets
# ------------------------------------------------------------------------------------------------------------
def test_parse_stops():
    from llm_chat.serving.ui import parse_stops

    assert parse_stops(" ###, User: ,,\\n") == ["###", "User:", "\n"]
    assert parse_stops(None) == [] and len(parse_stops("a,b,c,d,e")) == 4


def test_stream_text_grows_and_ends_with_stats(engine):
    steps = _greedy(engine, "tuned-a", "hello", 6)
    texts = [t for t, _ in steps]
    assert all(texts[i + 1].startswith(texts[i]) for i in range(len(texts) - 1))  # grows monotonically
    final = steps[-1][1]
    assert final["tokens"] == 6 and final["finish"] == "length" and final["seconds"] > 0


def test_system_info_reports_device_memory_and_counters(engine):
    from llm_chat.serving.ui import system_info

    info = system_info(engine)
    assert info["device"] == "cpu" and info["process_rss_mb"] > 0
    assert info["adapters"] == ["tuned-a", "tuned-b"] and info["parameters_m"] > 0
    assert "served_requests" in info and info["queue"] == 0


def test_engine_add_adapter_serves_a_saved_adapter(engine, tmp_path):
    """The Train tab's "load adapter": a saved adapter dir becomes a new model id answering like the original."""
    want = _greedy(engine, "tuned-b", "hello", 6)[-1][0]
    engine.model.save_pretrained(str(tmp_path), selected_adapters=["tuned-b"])
    saved = tmp_path / "tuned-b"  # peft saves a non-default adapter in a subdir named after it
    try:
        engine.add_adapter("fresh-run", str(saved))
        assert engine.model_ids() == ["tiny-base", "fresh-run", "tuned-a", "tuned-b"]
        assert _greedy(engine, "fresh-run", "hello", 6)[-1][0] == want
        assert _greedy(engine, "tuned-a", "hello", 6)[-1][0] != want  # the others are still themselves
        with pytest.raises(ValueError, match="already served"):
            engine.add_adapter("tuned-a", str(saved))
    finally:
        if "fresh-run" in engine.adapters:
            engine.model.delete_adapter("fresh-run")
            engine.adapters.remove("fresh-run")


def test_train_tab_readouts():
    from llm_chat.serving.ui import curve_figure, curve_frame, status_line, training_summary

    rows = [
        {"step": 1, "loss": 2.5},
        {"step": 2, "loss": 2.0, "grad_norm": 1.0},
        {"step": 2, "eval_loss": 2.2},
    ]
    df = curve_frame(rows)
    assert df.to_dict("records") == [
        {"step": 1, "value": 2.5, "series": "loss"},
        {"step": 2, "value": 2.0, "series": "loss"},
        {"step": 2, "value": 2.2, "series": "eval_loss"},
    ]
    assert list(curve_frame([]).columns) == ["step", "value", "series"]
    assert curve_figure([]) is None
    lines = curve_figure(rows).axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["loss", "eval_loss"]
    assert list(lines[0].get_xdata()) == [1, 2] and list(lines[0].get_ydata()) == [2.5, 2.0]
    st = {"state": "running", "app": "llm-chat", "step": 2, "max_steps": 3, "loss": 2.0, "elapsed_s": 4.5}
    assert status_line(st) == "**running** · `llm-chat` · step 2/3 · loss 2.0000 · 4.5 s"
    assert training_summary({**st, "eval_loss": 2.2}) == {
        "training": "llm-chat (running)",
        "training_step": "2/3",
        "training_loss": 2.0,
        "training_elapsed_s": 4.5,
        "training_eval_loss": 2.2,
    }
    failed = {**st, "state": "failed", "max_steps": None, "loss": None, "error": "llm-chat train: error: x"}
    assert (
        status_line(failed)
        == "**failed** · `llm-chat` · step 2/? · 4.5 s\n\n**error:** `llm-chat train: error: x`"
    )
    assert training_summary({"state": "idle"}) == {"training": "none"} and status_line({}) == "no run yet"


def test_ui_mounts_on_the_api_server(engine):
    from llm_chat.serving.schema import ServeSettings
    from llm_chat.serving.server import build_app
    from llm_chat.testing import ServerThread

    app = build_app(engine, ServeSettings(ui_path="/ui"))
    with ServerThread(app) as url:
        page = httpx.get(url + "/ui/", follow_redirects=True, timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert httpx.get(url + "/health").json()["status"] == "ok"  # API still there
        # The API and the UI share one engine: /v1/models lists what the picker offers.
        assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == engine.model_ids()


def test_ui_requires_the_api_key_when_set(engine):
    from llm_chat.serving.schema import ServeSettings
    from llm_chat.serving.server import build_app
    from llm_chat.testing import ServerThread

    app = build_app(engine, ServeSettings(api_key="k", ui_path="/ui"))
    with ServerThread(app) as url:
        r = httpx.get(url + "/ui/config", timeout=30)
        assert r.status_code in (401, 403)  # behind Gradio's login (password = the API key)
        ok = httpx.post(url + "/ui/login", data={"username": "me", "password": "k"}, timeout=30)
        bad = httpx.post(url + "/ui/login", data={"username": "me", "password": "nope"}, timeout=30)
        assert ok.status_code == 200 and bad.status_code >= 400


@pytest.mark.parametrize("command", ["serve", "webui"])
def test_webui_is_serve_with_the_ui_mounted(monkeypatch, command):
    """`llm-chat webui` runs the `serve` entry with the UI: same engine wiring, plus /ui/ and / -> /ui/."""
    import uvicorn
    from fastapi.testclient import TestClient
    from llm_chat.cli import APP
    from llm_chat.serving import server
    from llm_chat.serving.engine import Engine
    from lora_shared.cli import build_config

    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(app=app, **kw))
    monkeypatch.setattr(
        server, "build_engine", lambda cfg, *a: Engine(*_tiny_builder()(), base_name="tiny-base")
    )
    cmd = next(c for c in APP.commands if c.name == command)
    cfg, _ = build_config(APP, cmd, ["--config", "tiny", "--port", "9876"])
    assert cmd.target.partition(":")[0] == "llm_chat.serving.server"
    assert getattr(server, cmd.target.partition(":")[2])(cfg) == 0
    assert ran["port"] == 9876 and ran["host"] == "127.0.0.1"
    client = TestClient(ran["app"])
    assert client.get("/health").json()["status"] == "down"  # serve closed its engine on the way out
    root = client.get("/", follow_redirects=False)
    ui = client.get("/ui/", follow_redirects=True)
    if command == "webui":
        assert root.status_code in (302, 307) and root.headers["location"] == "/ui/"
        assert ui.status_code == 200 and "<html" in ui.text.lower()
    else:
        assert root.status_code == 404 and ui.status_code == 404


# ------------------------------------------------------------------------------------------------------------
# The real page in headless Chromium
# ------------------------------------------------------------------------------------------------------------
class Page:
    """A selenium session with the few verbs these tests use (find with an explicit wait, type, click, js)."""

    def __init__(self, driver):
        self.driver = driver

    def get(self, url: str) -> None:
        self.driver.get(url)

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def find(self, css: str, timeout: float = 60.0):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout).until(
            EC.presence_of_element_located((By.CSS_SELECTOR, css))
        )

    def wait(self, predicate, timeout: float = 60.0, message: str = ""):
        """Poll `predicate(page)` until it returns something truthy (selenium's explicit wait)."""
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            lambda _: predicate(self), message
        )

    def type(self, element, text: str) -> None:
        element.send_keys(text)

    def fill(self, css: str, text: str) -> None:
        """Replace a Gradio textbox's text (its <textarea> or <input>)."""
        box = self.find(css)
        box.clear()
        box.send_keys(text)

    def click(self, element) -> None:
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        element.click()

    def text(self, css: str) -> str:
        return self.js("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", css)

    def tab(self, name: str) -> None:
        assert self.js(
            "for (const b of document.querySelectorAll('button[role=tab]'))"
            " if (b.innerText.trim() === arguments[0]) { b.click(); return true; } return false;",
            name,
        ), f"no tab {name!r}"

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))


APT_INSTALL = "apt-get update && apt-get install -y chromium chromium-driver fonts-noto-cjk"


@pytest.fixture()
def browser(tmp_path):
    """Headless Debian Chromium through selenium. Skips without it, except in CI (CI=true), where it fails."""
    if not CHROMIUM.exists() or not Path(CHROMEDRIVER).exists():
        msg = f"needs Debian chromium + chromium-driver at {CHROMIUM}, {CHROMEDRIVER} ({APT_INSTALL})"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI must run the browser test: {msg}; .ci/run installs them")
        pytest.skip(msg)
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=tmp_path)}",
        "--window-size=1280,1000",
        "--lang=en-US",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(120)
    try:
        yield Page(driver)
    finally:
        driver.quit()


def _squash(s: str) -> str:
    return "".join(s.split())


@pytest.mark.slow
def test_browser_chat_streams_an_answer(engine, browser, tmp_path):
    from llm_chat.serving.schema import ServeSettings
    from llm_chat.serving.server import build_app
    from llm_chat.testing import ServerThread

    expected = _squash(_greedy(engine, "tuned-a", "hello from the browser", 40)[-1][0])
    left_want = _squash(_greedy(engine, "tiny-base", "hello from the browser", 40)[-1][0])
    assert expected and left_want
    # Slow each decoding step down a little so the browser can watch the answer grow (the peft wrapper
    # generates through the inner model, so patch that one).
    model = engine.model.get_base_model()
    original = model.forward

    def slow_forward(*a, **kw):
        time.sleep(0.03)
        return original(*a, **kw)

    model.forward = slow_forward
    app = build_app(engine, ServeSettings(ui_path="/ui"))
    try:
        with ServerThread(app) as url:
            browser.get(url + "/ui/")
            box = browser.find("#chat-input textarea")
            # Greedy and 40 tokens, so the page must show exactly the answer computed above.
            _set_number(browser, "Temperature (0 = greedy)", "0")
            _set_number(browser, "Max new tokens", "40")
            browser.type(box, "hello from the browser")
            browser.click(browser.find("#chat-send"))
            seen: list[int] = []
            deadline = time.time() + 90
            panel = ""
            while time.time() < deadline:
                panel = browser.js(
                    "const e = document.querySelector('#chat-panel'); return e ? e.innerText : '';"
                )
                bot = _squash(panel.split("hello from the browser", 1)[-1])
                if bot and (not seen or len(bot) != seen[-1]):
                    seen.append(len(bot))
                if expected in bot:
                    break
                time.sleep(0.05)
            shot = Path(os.environ.get("LLM_CHAT_SCREENSHOT_DIR", tmp_path)) / "webui_chat.png"
            browser.screenshot(shot)
            assert expected in _squash(panel), (panel, expected)
            assert len(seen) >= 3, seen  # the answer appeared in pieces: it was streamed
            assert shot.stat().st_size > 10_000

            # Compare tab: the same prompt answered by the base (left) and the tuned adapter (right).
            browser.js(
                "for (const b of document.querySelectorAll('button[role=tab]'))"
                " if (b.innerText.trim() === 'Compare') { b.click(); return true; } return false;"
            )
            browser.type(browser.find("#compare-prompt textarea"), "hello from the browser")
            browser.click(browser.find("#compare-run"))
            outs = ("", "")
            deadline = time.time() + 90
            while time.time() < deadline:
                outs = browser.js(
                    "return Array.from(document.querySelectorAll('.compare-out textarea')).map(t => t.value);"
                )
                if len(outs) == 2 and _squash(outs[0]) == left_want and _squash(outs[1]) == expected:
                    break
                time.sleep(0.1)
            browser.screenshot(shot.with_name("webui_compare.png"))
            assert _squash(outs[0]) == left_want and _squash(outs[1]) == expected, outs
            assert left_want != expected  # base and tuned really differ side by side

            # Stop: a long answer is cut short and the engine really stops generating.
            browser.js(
                "for (const b of document.querySelectorAll('button[role=tab]'))"
                " if (b.innerText.trim() === 'Chat') { b.click(); return true; } return false;"
            )
            _set_number(browser, "Max new tokens", "1500")
            cancelled = engine.stats["cancelled"]
            browser.type(browser.find("#chat-input textarea"), "a long one please")
            browser.click(browser.find("#chat-send"))
            deadline = time.time() + 60
            while engine.in_flight == 0 or engine.stats["completion_tokens"] == 0:
                assert time.time() < deadline, "generation never started"
                time.sleep(0.05)
            time.sleep(0.5)
            browser.click(browser.find("#chat-stop"))
            deadline = time.time() + 30
            while engine.in_flight:
                assert time.time() < deadline, "Stop did not stop the generation"
                time.sleep(0.05)
            assert engine.stats["cancelled"] == cancelled + 1

            # System tab: device and memory panel, refreshed on demand.
            browser.js(
                "for (const b of document.querySelectorAll('button[role=tab]'))"
                " if (b.innerText.trim() === 'System') { b.click(); return true; } return false;"
            )
            browser.click(browser.find("#system-refresh"))
            info = ""
            deadline = time.time() + 30
            while time.time() < deadline and "served_cancelled" not in info:
                info = browser.js(
                    "const e = document.querySelector('#system-info'); return e ? e.innerText : '';"
                )
                time.sleep(0.1)
            browser.screenshot(shot.with_name("webui_system.png"))
            assert "process_rss_mb" in info and "cpu" in info and "tuned-a" in info, info
    finally:
        model.forward = original


def _set_number(browser: Page, label: str, value: str) -> None:
    """Set a Gradio slider through its number box, found by the slider's label text."""
    script = """
        const [label, value] = arguments;
        for (const block of document.querySelectorAll('.block')) {
            if (!block.innerText.includes(label)) continue;
            const input = block.querySelector('input[type=number]');
            if (!input) continue;
            const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
            setter.call(input, value);
            input.dispatchEvent(new Event('input', {bubbles: true}));
            input.dispatchEvent(new Event('change', {bubbles: true}));
            input.dispatchEvent(new Event('blur', {bubbles: true}));
            return true;
        }
        return false;
    """
    assert browser.js(script, label, value), f"no slider labelled {label!r}"


# ------------------------------------------------------------------------------------------------------------
# Chat turn + a real tiny training run from the Train tab (fast: runs in `make test` and CI)
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_engine():
    """An engine on the `--config tiny` random Qwen2, the base a tiny training run's adapter fits."""
    import torch
    from llm_chat.cli import APP
    from llm_chat.serving.server import build_engine
    from lora_shared.cli import build_config

    torch.set_num_threads(1)
    serve = next(c for c in APP.commands if c.name == "webui")
    cfg, _ = build_config(APP, serve, ["--config", "tiny"])
    eng = build_engine(cfg)
    yield eng
    eng.close()


def test_browser_chat_then_train_watch_and_load_the_adapter(tiny_engine, browser, tmp_path):
    from llm_chat.serving.schema import ServeSettings
    from llm_chat.serving.server import build_app
    from llm_chat.serving.training import RunManager
    from llm_chat.testing import ServerThread

    shots = Path(os.environ.get("LLM_CHAT_SCREENSHOT_DIR", tmp_path))
    runs = RunManager(tmp_path / "logs")
    out = tmp_path / "webui-run"
    app = build_app(tiny_engine, ServeSettings(ui_path="/ui"), runs=runs, max_tokens=8)
    try:
        with ServerThread(app) as url:
            browser.get(url + "/ui/")
            # A chat turn: the user's message and a finished answer's stats line.
            browser.type(browser.find("#chat-input textarea"), "你好, what can you do?")
            browser.click(browser.find("#chat-send"))
            status = browser.wait(
                lambda p: "tokens in" in p.text("#chat-status") and p.text("#chat-status"), 120, "no answer"
            )
            assert status.startswith(f"{tiny_engine.base_name} · ") and "finish:" in status
            assert "你好, what can you do?" in browser.text("#chat-panel")

            # Train tab, bad input first: the CLI's one-line error shows in the page, nothing starts.
            browser.tab("Train")
            browser.fill("#train-output textarea", str(out))
            browser.fill("#train-extra textarea", "--learnig_rate 1")
            browser.click(browser.find("#train-launch"))
            err = browser.wait(
                lambda p: "error" in p.text("#train-message") and p.text("#train-message"), 300
            )
            assert "llm-chat train: error: unknown flag --learnig_rate; did you mean --learning_rate?" in err
            assert runs.run is None

            # A tiny run (seconds): a few steps, short dialogs.
            browser.fill("#knob-max_steps textarea", "4")
            browser.fill("#knob-per_device_train_batch_size textarea", "2")
            browser.fill(
                "#train-extra textarea", "--max_length 512 --max_train_samples 8 --max_eval_samples 2"
            )
            browser.click(browser.find("#train-launch"))
            browser.wait(lambda p: "launched llm-chat train" in p.text("#train-message"), 300, "no launch")
            assert runs.run.argv[:5] == ["train", "--config", "tiny", "--output_dir", str(out)]
            flags = runs.run.argv[5:]
            assert flags[flags.index("--max_steps") + 1] == "4" and "--max_train_samples" in flags
            # The curve: the plot draws once metrics.jsonl has a loss row (the empty plot has no canvas).
            # Timeouts are generous for a starved shared CPU; an idle 2-core box needs ~20 s for the run.
            browser.wait(lambda p: p.js(_PLOT_DRAWN), 600, "no loss curve appeared")
            # Mid-run screenshot once the curve has two points (a fast run may be done by then).
            browser.wait(lambda p: runs.status()["step"] >= 2 or runs.run.state() != "running", 600)
            browser.js("document.querySelector('#train-status').scrollIntoView({block: 'start'});")
            browser.screenshot(shots / "webui_train.png")
            done = browser.wait(
                lambda p: (
                    any(w in p.text("#train-status") for w in ("finished", "failed", "stopped"))
                    and p.text("#train-status")
                ),
                600,
                "the run did not finish",
            )
            assert done.startswith("finished · llm-chat · step 4/4 · loss "), (done, runs.status().get("log"))
            assert "adapter in" in done and (out / "adapter_model.safetensors").is_file()
            assert "llm-chat train" in browser.find("#train-log textarea").get_attribute("value")

            # System tab refreshes by itself: the finished run shows without pressing Refresh.
            browser.tab("System")
            info = browser.wait(
                lambda p: "llm-chat (finished)" in p.text("#system-info") and p.text("#system-info"), 30
            )
            assert "training_step" in info and "4/4" in info

            # Load the adapter, then Compare base vs the new adapter.
            browser.tab("Train")
            browser.click(browser.find("#train-load"))
            name = out.name
            browser.wait(
                lambda p: f"loaded adapter {name}" in p.text("#train-message"), 300, "adapter not loaded"
            )
            assert tiny_engine.model_ids() == [tiny_engine.base_name, name]
            browser.tab("Compare")
            right = browser.find("#compare-right input")
            browser.wait(
                lambda p: right.get_attribute("value") == name, 30, "Compare did not pick the adapter"
            )
            browser.type(browser.find("#compare-prompt textarea"), "我的信用卡丢了怎么办？")
            browser.click(browser.find("#compare-run"))

            def both_answered(p):
                stats = [p.text("#compare-left-stats"), p.text("#compare-right-stats")]
                return stats if all("tokens in" in s for s in stats) else None

            stats = browser.wait(both_answered, 120, "Compare did not answer on both sides")
            assert stats[0].startswith(tiny_engine.base_name) and stats[1].startswith(name)
            browser.screenshot(shots / "webui_compare_trained.png")
    finally:
        runs.shutdown(timeout=10)
        if out.name in tiny_engine.adapters:
            tiny_engine.model.delete_adapter(out.name)
            tiny_engine.adapters.remove(out.name)


_PLOT_DRAWN = "return !!document.querySelector('#train-plot img');"  # the matplotlib figure, once drawn


@pytest.mark.parametrize("uid", ["0", "1000"])
def test_ci_installs_the_browser_as_root_and_says_why_not_otherwise(tmp_path, uid):
    """.ci/run's apt step, run with stub apt-get/id/fc-list (no CJK font seen): installs as root, explains otherwise."""
    script = (Path(__file__).parents[3] / ".ci" / "run").read_text()
    start = script.index("# The web UI's browser test")
    block = script[start : script.index("\nfi\n", start) + 4]
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in {
        "apt-get": f'echo "apt-get $*" >> {tmp_path}/apt.log',
        "id": f"echo {uid}",
        "fc-list": "echo DejaVuSans.ttf",
    }.items():
        (stubs / name).write_text(f"#!/bin/sh\n{body}\n")
        (stubs / name).chmod(0o755)
    r = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + block],
        env={"PATH": f"{stubs}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    log = tmp_path / "apt.log"
    if uid == "0":
        assert log.read_text().splitlines() == [
            "apt-get update -q",
            "apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-noto-cjk",
        ]
    else:
        assert not log.exists() and "not root: cannot apt-get install chromium" in r.stderr
