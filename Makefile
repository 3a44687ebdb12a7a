# Two entry points for a fresh machine (see README.md):
#   make demo   create .venv, install pinned dependencies, run the offline quickstart (again: the earlier
#               runs/quickstart is moved aside to runs/quickstart.old-<time>, never deleted)
#   make test   create .venv, install pinned dependencies, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test install bench clean

# setuptools prints a generic "Editable installation" notice for every editable install whose package
# lives in another folder (fuse is core/); it is not about fuse, so the first screen leaves it out.
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q -c constraints.txt -e ".[demo,test]"
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/fuse train recipes/quickstart.yaml --overwrite

test: $(BIN)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) runs build dist *.egg-info
