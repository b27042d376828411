# Set-up, the main job and the tests. `make run` and `make test` install what they need on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# An offline copy of Imagenette beside the project is used when IMAGENETTE_PATH isn't set.
SHARED_DATA := $(abspath ../shared/data/imagenette)
export IMAGENETTE_PATH ?= $(if $(wildcard $(SHARED_DATA)/train),$(SHARED_DATA))
NOTEBOOKS := $(wildcard nbs/[0-9]*.ipynb)

.PHONY: install run test test-unit test-nbs sync-check notebooks docs docs-check clean bench gpu-data gpu-wheels gpu-check dist

install: $(VENV)/.installed

# The package declares version ranges; the course's environment gets the exact versions from the constraints file.
CONSTRAINTS := requirements/constraints.txt

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' && $(BIN)/python -m pip --version > /dev/null || \
	  (echo "$(VENV) has no pip, or a Python older than 3.11. Fix: rm -rf $(VENV), then make PYTHON=python3.11 ..." \
	        "(on Debian or Ubuntu, apt install python3.11-venv first)"; exit 1)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev,docs]'
	touch $@

run: install  ## the main job, the whole chapter: quick mode on a CPU, full mode on a GPU
	$(BIN)/imagenette-course run all
# the figures only: `run all` has just printed the same comparison table
	$(BIN)/imagenette-course report --plot results.png > /dev/null && echo "figures saved to results.png"

test: test-unit test-nbs  ## unit tests, then every notebook under nbval, in quick mode

# One pytest worker per core (pytest-xdist), each with one torch thread. Measured side by side on 2 cores, nbval on
# notebooks 02 and 06: 112 s in one process, 90 s in two workers with one thread each, and over 300 s (stopped) in
# two workers with two threads each, where every op waits for a core. The notebooks go whole to a worker (--dist loadfile): nbval runs each in its own kernel, cell after cell.
# `make test TEST_PAR=` runs everything in one process, with torch's own thread count.
TEST_PAR := -n auto --maxprocesses 8
TEST_ENV := $(if $(TEST_PAR),OMP_NUM_THREADS=1)
test-unit: install
	IMAGENETTE_MODE=quick $(TEST_ENV) $(BIN)/python -m pytest $(TEST_PAR) --dist worksteal tests

test-nbs: install
	IMAGENETTE_MODE=quick IN_TEST=1 IMAGENETTE_LEDGER=$$(mktemp -d)/ledger.jsonl $(TEST_ENV) \
	  $(BIN)/python -m pytest $(TEST_PAR) --dist loadfile --nbval-lax --nbval-cell-timeout=600 -p no:cacheprovider $(NOTEBOOKS)

sync-check: install  ## fail if the notebooks aren't clean or the package isn't exported from them
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
	@git diff --exit-code --stat -- nbs imagenette_course || \
	  (echo "Notebooks and package out of sync: run 'make notebooks' (or nbdev-export && nbdev-clean) and commit."; exit 1)
	@test -z "$$(git status --porcelain -- nbs imagenette_course)" || \
	  (git status --porcelain -- nbs imagenette_course; echo "Untracked files from nbdev-export: commit them."; exit 1)

notebooks: install  ## execute every notebook in quick mode, then export and clean (what gets committed)
	IMAGENETTE_MODE=quick IMAGENETTE_LEDGER=$$(mktemp -d)/ledger.jsonl \
	  $(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=600 $(NOTEBOOKS)
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean

docs: install  ## the course website in _site/, rendered from the committed notebooks (nothing is run)
	$(BIN)/python docs/build_site.py

docs-check: install  ## read _site/ in headless Chromium; fails on any broken page, screenshots in _site_check/
	$(BIN)/python docs/check_site.py

bench: install  ## CPU benchmarks, run by hand (a few minutes): data pipeline, then training step; see bench/README.md
	$(BIN)/python bench/data_pipeline.py
	$(BIN)/python bench/train_step.py

GPU_DATA   ?= build/gpu_data
GPU_IMAGES ?= build/gpu_imagenette
GPU_OUT    ?= results/gpu
# Runs sharing the GPU at a time (scripts/gpu_check.py --lanes): at bs 64 one process leaves a large GPU idle
GPU_LANES  ?= 3

gpu-data: install  ## Imagenette packed for a GPU machine: all 13,394 images at 224 px as AVIF (<= 47 MiB), build/gpu_data
	rm -rf $(GPU_DATA)
	$(BIN)/python scripts/make_gpu_data.py $(GPU_DATA)

gpu-wheels: install  ## the wheels a lent GPU machine lacks (fastai and its small requirements, Pillow with AVIF), in .whl/
	rm -rf .whl
	$(BIN)/python scripts/gpu_wheels.py .whl

# The GPU numbers come from the packed copy (AVIF, then unpacked as JPEG), wherever they are reproduced. A new run
# replaces the one in $(GPU_OUT) whole: its ledger and summary (gpu_check.py --replace), then its data-path speeds;
# results/gpu's earlier runs are kept by git, a GPU_OUT elsewhere keeps nothing. The check comes first; the benchmark
# runs whatever the check's exit status, which is the target's, and its own failure stops nothing. (Its largest decode,
# 13,394 images at the book's presize of 460 px, is 8.5 GB: on a GPU without room for it, it measures the other paths.)
# From the unpacking on, the output goes to $(GPU_OUT)/log.txt too, a new log for the new run; bash's pipefail makes
# the check's exit status, not tee's, the pipeline's.
gpu-check: SHELL := bash
gpu-check: .SHELLFLAGS := -o pipefail -c
gpu-check: install  ## every recipe in full mode on one GPU, in <= 8 minutes: ledger, summary.json, log in $(GPU_OUT)/
	test -f $(GPU_DATA)/index.json || $(MAKE) gpu-data
	rm -rf $(GPU_IMAGES)
	rm -f $(addprefix $(GPU_OUT)/,data_path.json optimizer_step.json gpu.txt lanes.tgz results.png log.txt)
	mkdir -p $(GPU_OUT)
	{ $(BIN)/python scripts/unpack_gpu_data.py $(GPU_DATA) $(GPU_IMAGES) || exit $$?; \
	  status=0; \
	  $(BIN)/python scripts/gpu_check.py $(GPU_IMAGES) --out $(GPU_OUT) --lanes $(GPU_LANES) --replace || status=$$?; \
	  $(BIN)/python bench/gpu_data_path.py $(GPU_IMAGES) --out $(GPU_OUT)/data_path.json || \
	    echo "gpu-check: the data-path benchmark failed (exit status $$?): see above"; \
	  exit $$status; } 2>&1 | tee $(GPU_OUT)/log.txt

clean:
	rm -rf $(VENV) build *.egg-info _docs _site _sphinx _site_check

# --- Packaging (issue 13) ---------------------------------------------------------------------------------------
dist: install  ## the sdist and wheel a release uploads to PyPI, in dist/, checked with twine
	rm -rf dist build/lib build/bdist.*  # a module removed from the source must not live on in the wheel
	$(BIN)/python -m build --no-isolation --outdir dist
	$(BIN)/twine check --strict dist/*
