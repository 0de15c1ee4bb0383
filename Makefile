# Two commands for a fresh clone: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/data/wikitext-2)
export COURSE_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/wiki.train.tokens),$(SHARED_DATA),)

.PHONY: demo test test-fast bench env

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 || $(PY) -m pip install -q torch
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

env: $(VENV)/.installed

demo: env
	$(PY) -m course.demo

test: env
	$(VENV)/bin/course build --check
	$(PY) -m pytest -q

test-fast: env
	$(PY) -m pytest -q -m "not slow" -x

bench: env
	$(PY) bench/train_throughput.py
	$(PY) bench/probe_overhead.py
	$(PY) bench/decode.py
	$(PY) bench/grade_throughput.py
