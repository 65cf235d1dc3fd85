# lsnoise: `make reproduce` runs the main job, `make test` the tests. Every target creates .venv on first use
# (pip install -e ".[dev]" and the `lsnoise` Jupyter kernel) and reuses it afterwards.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: reproduce test bench docs readme venv

$(STAMP): settings.ini setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name lsnoise --display-name "Python (lsnoise)"
	@touch $@

venv: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/lsnoise reproduce

test: $(STAMP)
	$(BIN)/nbdev_test
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/lsnoise bench --json runs/bench.json

# the docs site, offline: executes the notebooks (cached in _build/), builds _site/ with sphinx-build -W
docs: $(STAMP)
	$(BIN)/lsnoise docs

readme: $(STAMP)
	$(BIN)/lsnoise readme
