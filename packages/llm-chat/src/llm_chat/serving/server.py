"""`llm-chat serve` and `llm-chat webui`: load the model and adapters into an Engine, build the app (the
API, plus the web UI for `webui`) and run it with uvicorn. `webui` is `serve` with the UI mounted.

Import arrows point one way: schema <- engine <- api <- ui <- server (this module is the top).
"""

from __future__ import annotations

import logging
from pathlib import Path

from lora_shared.models import tune_cpu_threads

from ..config import ChatPredictArgs, ServeArgs, get_group
from .api import create_app
from .engine import Engine, adapter_names
from .schema import ServeSettings, settings_from
from .ui import UI_PATH, mount_ui

logger = logging.getLogger(__name__)


def build_engine(cfg, max_queue: int = 64, max_batch_size: int = 8) -> Engine:
    """Load the base (or the tiny random model) + --adapter_dir + --adapters and wrap them in an Engine."""
    from ..model import load_for_cfg

    args = get_group(cfg, ServeArgs)
    model, tokenizer = load_for_cfg(cfg, list(getattr(args, "adapters", None) or []))
    tune_cpu_threads(model)
    base_name = base_model_id(cfg.model)
    while base_name in adapter_names(model):  # an adapter dir named like the base: keep both reachable
        base_name += "-base"
    return Engine(model, tokenizer, base_name=base_name, max_queue=max_queue, max_batch_size=max_batch_size)


def base_model_id(model_args) -> str:
    """The id clients use for the base model: the model dir's name, `<run>-base` for a tiny run's saved
    random base, `<type>-random` for a random model built from --model_type."""
    if getattr(model_args, "model_type", None):
        return f"{model_args.model_type}-random"
    p = Path(str(getattr(model_args, "model_name_or_path", None) or "base"))
    if p.name == "base_model" and p.parent.name:
        return f"{p.parent.name}-base"
    return p.name or "base"


def warn_if_exposed(host: str, api_key: str | None) -> None:
    """A warning when the server listens beyond loopback (and louder without an API key)."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "binding %s exposes the model to the network%s",
            host,
            "" if api_key else " without an API key (set --api_key or LLM_CHAT_API_KEY)",
        )


def build_app(engine: Engine, settings: ServeSettings | None = None, **ui_kwargs):
    """The API app for `engine`, with the web UI mounted at settings.ui_path when set (and / sent there)."""
    from fastapi.responses import RedirectResponse

    settings = settings or ServeSettings()
    app = create_app(engine, settings)
    if settings.ui_path:
        ui_path = settings.ui_path.rstrip("/")
        mount_ui(app, engine, ui_path, api_key=settings.api_key, **ui_kwargs)

        @app.get("/", include_in_schema=False)
        async def _root():
            return RedirectResponse(ui_path + "/")

    return app


def serve(cfg, *, ui: bool = False) -> int:
    """`llm-chat serve`: the OpenAI-compatible API with uvicorn; with `ui`, the web UI on the same port."""
    import uvicorn

    args = get_group(cfg, ServeArgs)
    settings = settings_from(args)
    if ui:
        settings.ui_path = settings.ui_path or UI_PATH
    host = getattr(args, "host", None) or "127.0.0.1"
    port = int(getattr(args, "port", None) or 8000)
    warn_if_exposed(host, settings.api_key)
    engine = build_engine(cfg, settings.max_queue, settings.max_batch_size)
    ui_kwargs: dict = {}
    if settings.ui_path:
        ui_kwargs["max_tokens_limit"] = settings.max_tokens_limit
        predict_args = get_group(cfg, ChatPredictArgs)  # the chat defaults seed the UI's sliders
        if predict_args is not None:
            ui_kwargs.update(
                max_tokens=predict_args.max_new_tokens,
                temperature=predict_args.temperature,
                top_p=predict_args.top_p,
            )
    app = build_app(engine, settings, **ui_kwargs)
    logger.info(
        "serving %s on http://%s:%d/v1 (models: %s; api key %s)",
        engine.base_name,
        host,
        port,
        ", ".join(engine.model_ids()),
        "required" if settings.api_key else "off",
    )
    if settings.ui_path:
        logger.info("web UI on http://%s:%d%s/ (API at /v1)", host, port, settings.ui_path.rstrip("/"))
    try:
        uvicorn.run(
            app, host=host, port=port, log_level="info", access_log=False, timeout_graceful_shutdown=5
        )
    finally:
        engine.close()
    return 0


def webui(cfg) -> int:
    """`llm-chat webui`: `serve` with the web UI at http://HOST:PORT/ui/ (the API stays at /v1)."""
    return serve(cfg, ui=True)
