# Two commands for a fresh clone: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/data/wikitext-2)
export COURSE_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/wiki.train.tokens),$(SHARED_DATA),)

.PHONY: demo test test-fast audit lint bench env

# What the tests need (CI installs only this); `make env` adds JupyterLab, to open the notebooks.
$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 || $(PY) -m pip install -q torch
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

$(VENV)/.notebooks: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev,notebooks]"
	touch $@

env: $(VENV)/.notebooks
	@echo "open the notebooks with: $(VENV)/bin/jupyter lab assignments/"

demo: env
	$(PY) -m course.demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(VENV)/.installed
	@echo "make test: lint, the assignments' freshness, then every test but the long audits: about 12 minutes on 2 CPU cores (make test-fast: about 1 minute)"
	@$(MAKE) --no-print-directory lint
	$(VENV)/bin/course build --check
	$(PY) -m pytest -q -m "not audit"

audit: $(VENV)/.installed
	@echo "make audit: every function the student release ships, wrapped as each graded function and graded, and the tiny preset's promised perplexity after its full training: about 20 minutes on 2 CPU cores"
	$(PY) -m pytest -q -m audit

test-fast: $(VENV)/.installed
	@echo "make test-fast: the tests not marked slow, about 1 minute on 2 CPU cores"
	$(PY) -m pytest -q -m "not slow" -x

bench: $(VENV)/.installed
	$(PY) bench/train_throughput.py
	$(PY) bench/probe_overhead.py
	$(PY) bench/decode.py
	$(PY) bench/grade_throughput.py

# The lectures as reveal.js decks: lectures/slides/NN_name.slides.html, each notebook executed on the checkpoint
# the lectures find ($COURSE_CHECKPOINT, runs/course, runs/laptop or runs/tiny). reveal.js is fetched once with npm
# into lectures/slides/assets so that the decks work offline (without npm they load it from the web).
.PHONY: slides
slides: $(VENV)/.installed
	$(PY) -m course.lectures --out lectures/slides $(sort $(wildcard lectures/*.ipynb))

# The same, and the README's figures (docs/figures/NAME.png): the images of the lecture cells tagged figure:NAME,
# with docs/figures/source.json saying which checkpoint drew them (it refuses to replace a larger preset's figures).
.PHONY: figures
figures: $(VENV)/.installed
	$(PY) -m course.lectures --out lectures/slides --figures docs/figures $(sort $(wildcard lectures/*.ipynb))
