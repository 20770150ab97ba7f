# Two commands on a fresh machine: `make test` and `make bench`.
# TORCH_SPEC picks the torch build: the default is the CPU build that installs here; a GPU user passes their own
# (e.g. TORCH_SPEC="torch==2.13.0+cu128"), and if the venv already imports torch nothing is reinstalled.
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tokenmix-installed

.PHONY: install test bench docs performance clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

test: install
	$(PY) -m pytest -n 2 -q

bench: install
	$(VENV)/bin/tokenmix bench

docs: install
	$(VENV)/bin/tokenmix docs

# Every registered mixer at the default speed sweep, written into docs/performance.md's generated section.
# Run it on a quiet machine: other jobs on the cores inflate and scatter every time.
performance: install
	$(VENV)/bin/tokenmix speed --mixers all --threads 2 --out results/performance --docs docs/performance.md

clean:
	rm -rf $(VENV) build src/*.egg-info
