# CAG-VLM compendium. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PROFILE ?= smoke
SET ?=
# `make test` / `make test-fast`: pytest-xdist workers (the root conftest.py keeps the notebooks on one); 0 = one
# process, the default: on 2 cores a second worker slowed the notebooks 2-3 fold (docs/testing.md, two workers)
TEST_WORKERS ?= 0
PYTEST := $(VENV)/bin/python -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS))
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Notebook kernels and tools resolve to the venv.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PYTHONHASHSEED := 0

.DEFAULT_GOAL := help
.PHONY: help install reproduce test test-fast lab paper book bench budget variance ceiling standins gpu-check clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-11s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  Variables: PROFILE=$(PROFILE) (smoke | paper), SET=\"key=value ...\" (profile overrides), PYTHON=$(PYTHON),"
	@echo "             TEST_WORKERS=$(TEST_WORKERS) (pytest-xdist workers for make test; 0 = one process, best on 2 cores)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -P cag_utils/run/install.py   # uv with pip's package sources (pip if uv fails): docs/testing.md
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned dependencies and cag_utils (once)

reproduce: $(STAMP) ## Run every notebook on PROFILE (default smoke, CPU; SET="key=value ...": overrides), write the paper inputs and the model cards
	$(PY) -m cag_utils.run.pipeline --profile $(PROFILE) $(addprefix -p ,$(SET))
	$(PY) -m cag_utils.run.report --profile $(PROFILE)
	$(PY) -m cag_utils.run.model_cards --profile $(PROFILE)

test: $(STAMP) ## Full suite (CI's): unit tests, nbval re-execution of the notebooks (in a temporary folder), tolerance check, paper and book builds
	$(PYTEST)

test-fast: $(STAMP) ## Unit tests only, without the `slow` tier (notebook re-execution, training, paper, browser): about 2 min on 2 cores
	$(PYTEST) tests -m "not slow"

lab: $(STAMP) ## JupyterLab on the venv kernel
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

paper: $(STAMP) ## Regenerate paper/generated/*.tex and build paper/main.pdf with latexmk
	$(PY) -m cag_utils.run.report --profile $(PROFILE)
	@if command -v latexmk >/dev/null; then cd paper && latexmk -pdf -interaction=nonstopmode -halt-on-error -silent \
	$(if $(filter smoke,$(PROFILE)),,-usepretex='\def\GeneratedDir{generated/$(PROFILE)}') main.tex \
	&& echo "paper/main.pdf: $$(pdfinfo main.pdf 2>/dev/null | awk '/^Pages/ {print $$2 " pages"}')"; \
	else echo "latexmk not found: apt-get install latexmk texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended lmodern"; \
	echo "paper/generated/*.tex are current; only the PDF was not built."; fi

book: $(STAMP) ## The book: README, docs/, the executed notebooks (as committed, not re-run) and the paper PDF as a static site -> build/book/index.html
	$(PY) -m cag_utils.run.book

bench: $(STAMP) ## Speed benchmarks -> results/bench_*.json
	$(PY) benchmarks/bench_data.py --out results/bench_data.json
	$(PY) benchmarks/bench_cnn.py --out results/bench_cnn.json
	$(PY) benchmarks/bench_vlm.py --out results/bench_vlm.json   # needs notebook 05's cached stand-ins
	$(PY) benchmarks/paper_estimate.py   # the paper profile's time and memory per step (reads bench_data.json)

budget: $(STAMP) ## The two time budgets: `make reproduce` and `make test`, each in a fresh clone of HEAD with its install, and the machine's CNN step time -> results/budget.json, figures/budget.png (35-85 min on 2 cores)
	$(PY) benchmarks/budget.py

variance: $(STAMP) ## Seed spread of the CNN (5 training seeds, after reproduce) -> results/variance_02_cnn.json
	$(PY) benchmarks/seed_spread.py --profile $(PROFILE) --seeds 5

ceiling: $(STAMP) ## CNN with 1x/3x/10x the training patients, and from the synthetic pretraining (after reproduce; ~2 h on 2 cores)
	$(PY) benchmarks/cnn_ceiling.py --profile $(PROFILE) --factors 1 3 10 -p cnn_max_minutes=0
	$(PY) benchmarks/cnn_ceiling.py --profile $(PROFILE) --factors 1 -p cnn_pretrain=synthetic_angles \
	    --out results/cnn_pretrain_effect.json --figure ''

standins: $(STAMP) ## Pretrain the smoke stand-ins (tokenizer, LM, SigLIP, ConceptCLIP, VLScore embedder) -> models/standins/$(PROFILE)/ (committed; about 45 min on 2 cores: 19-22 for the parts of notebook 05, 26 for the embedder)
	$(PY) -m cag_utils.vlm.make_standins --profile $(PROFILE)

# No venv needed: the GPU machine has torch, transformers, peft, timm, accelerate; writes $$OUT/gpu_check.json (else results/gpu/).
gpu-check: ## GPU check at full size: VLM LoRA + CNN steps (throughput, peak memory, MFU); no GPU: exits 0
	$(if $(wildcard $(PY)),$(PY),python3) benchmarks/gpu_check.py

clean: ## Remove generated cohorts, checkpoints, caches and the book (committed outputs stay)
	rm -rf data/work build .pytest_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
