"""The Gradio web UI: its plain helpers (fast) and the real page in headless Chromium (slow).

The browser test drives Debian's `chromium` through `chromedriver`'s W3C WebDriver HTTP API with httpx,
so it needs no selenium/playwright dependency. It skips when /usr/bin/chromium or chromedriver is absent
(`apt-get install -y chromium chromium-driver`).
"""

from __future__ import annotations

import base64
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
class WebDriver:
    """A minimal W3C WebDriver client for chromedriver (enough to type, click, read and screenshot)."""

    ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

    def __init__(self, driver_url: str, user_data_dir: str):
        self.http = httpx.Client(base_url=driver_url, timeout=60)
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={user_data_dir}",
            "--window-size=1280,900",
        ]
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": str(CHROMIUM), "args": args}}
        r = self.http.post("/session", json={"capabilities": {"alwaysMatch": caps}})
        r.raise_for_status()
        self.sid = r.json()["value"]["sessionId"]

    def cmd(self, method: str, path: str, payload: dict | None = None):
        r = self.http.request(method, f"/session/{self.sid}{path}", json=payload)
        r.raise_for_status()
        return r.json()["value"]

    def get(self, url: str) -> None:
        self.cmd("POST", "/url", {"url": url})

    def js(self, script: str, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css: str, timeout: float = 60.0) -> str:
        deadline = time.time() + timeout
        while True:
            found = self.cmd("POST", "/elements", {"using": "css selector", "value": css})
            if found:
                return found[0][self.ELEMENT]
            if time.time() > deadline:
                raise TimeoutError(f"no element {css!r} on the page")
            time.sleep(0.2)

    def type(self, element: str, text: str) -> None:
        self.cmd("POST", f"/element/{element}/value", {"text": text})

    def click(self, element: str) -> None:
        self.cmd("POST", f"/element/{element}/click", {})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.cmd("GET", "/screenshot")))

    def quit(self) -> None:
        try:
            self.http.delete(f"/session/{self.sid}")
        finally:
            self.http.close()


@pytest.fixture()
def browser(tmp_path):
    from llm_chat.testing import free_port

    if not CHROMIUM.exists() or not Path(CHROMEDRIVER).exists():
        pytest.skip("needs Debian chromium + chromium-driver (apt-get install -y chromium chromium-driver)")
    port = free_port()
    proc = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/status", timeout=2).json()["value"]["ready"]:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "chromedriver did not start"
            time.sleep(0.2)
        profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
        wd = WebDriver(f"http://127.0.0.1:{port}", profile)
        try:
            yield wd
        finally:
            wd.quit()
    finally:
        proc.terminate()
        proc.wait(10)


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


def _set_number(browser: WebDriver, label: str, value: str) -> None:
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
