# lsnoise: `make reproduce` runs the main job, `make test` the tests. Every target creates .venv on first use
# (pip install -c requirements-lock.txt -e ".[dev]": the locked versions, and the `lsnoise` Jupyter kernel) and reuses it
# afterwards; a changed lock file brings the venv back to it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements-lock.txt

.PHONY: reproduce reproduce-followup reproduce-replication test test-deps bench docs readme venv gpu-check lock

$(STAMP): settings.ini setup.py $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -c $(LOCK) -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name lsnoise --display-name "Python (lsnoise)"
	@touch $@

venv: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/lsnoise reproduce

# the main job plus the grids beyond the paper (negative smoothing, warm-up, clipping, FC teachers)
reproduce-followup: $(STAMP)
	$(BIN)/lsnoise reproduce --followup

# the same grids (main job and follow-up) on fresh seeds 5-9: the report's replication column and its `unstable` marks
reproduce-replication: $(STAMP)
	$(BIN)/lsnoise reproduce --replication --followup

# refresh the lock from settings.ini's ranges in a new, temporary environment (then `make reproduce` regenerates results/)
lock:
	@d=$$(mktemp -d) && $(PYTHON) -m venv "$$d/venv" && "$$d/venv/bin/python" -m pip install -q -e ".[dev]" && \
	  { sed -n '/^#/p' $(LOCK); "$$d/venv/bin/python" -m pip freeze --exclude-editable; } > "$$d/lock" && mv "$$d/lock" $(LOCK) && rm -rf "$$d"
	@echo "wrote $(LOCK): commit it with the results that \`make reproduce\` makes with it"

# every notebook is executed once: the library notebooks and templates by tests/test_notebooks.py (the docs build's
# cached copies, which the site tests then reuse), the narrative ones (theory, figures, report) by tests/test_reproduce.py
test: $(STAMP)
	$(BIN)/python -m pytest

# what the docs tests need besides Python: a headless Chromium (Debian's package, with apt-get; sudo when not root)
# and MathJax 3 (npm, into _build/mathjax). The tests install nothing themselves; .ci/run calls this before `make test`.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
test-deps: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; }
	$(BIN)/python -c "from lsnoise.docs import local_mathjax; print(local_mathjax('_build'))"

# the GPU acceptance check: needs only torch, numpy, pandas and pyyaml (no venv, no papermill, no data download);
# writes results/gpucheck-<date>-<gpu>.json, which the sweep's packing and cost estimates read
gpu-check:
	PYTHONPATH=$(CURDIR) $(PYTHON) -m lsnoise.gpucheck --out results

bench: $(STAMP)
	$(BIN)/lsnoise bench --json runs/bench.json

# the docs site, offline: executes the notebooks (cached in _build/), builds _site/ with sphinx-build -W
docs: $(STAMP)
	$(BIN)/lsnoise docs

readme: $(STAMP)
	$(BIN)/lsnoise readme
