"""llm-chat serving: the OpenAI-compatible API and the web UI over one generation engine.

Modules, bottom to top (each imports only the ones before it):
- `schema`: HTTP limits (`ServeSettings`), OpenAI-style errors, the request schema (pydantic).
- `engine`: `generate_rows` (THE streaming / stop-string / sampling code that chat, predict, eval and
  compare use too), `stream_generation` for one request, and `Engine` (queue + batching worker).
- `api`: `create_app(engine, settings)`, the FastAPI routes.
- `ui`: the Gradio UI and `mount_ui`.
- `server`: the `serve` / `webui` CLI entries (`webui` = `serve` with the UI) and `build_app`.
"""
