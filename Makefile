# Two commands for a newcomer: `make repro` (the default study) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export DVC_DAEMON := 0

.PHONY: venv data repro figures smoke test regress bless clean-smoke

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and exactly: a range (or a dependency asking for torch) would pull a CUDA build of several GB
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else 'pip resolved torch ' + v + ', expected 2.13.0')"
	touch $(STAMP)

venv: $(STAMP)

# Fashion-MNIST from Debian's dataset-fashion-mnist when we can install it (root on Debian/Ubuntu);
# otherwise `eebench prepare` downloads the canonical files and checks their SHA-256.
data:
	@if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ] \
	   && command -v apt-get >/dev/null; then \
	  echo "installing dataset-fashion-mnist with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	fi

repro: venv data
	dvc repro

# The figures, results/REPORT.md and its claims table, again, from the committed results/*.csv alone
# (no training): what `dvc repro` would redo in its `figures` stage.
figures: venv
	eebench figures

smoke: venv data
	eebench study --profile smoke --dir .smoke
	@echo "--- dvc repro again in .smoke (expect nothing to do):"
	cd .smoke && dvc repro

test: venv data
	$(BIN)/python -m pytest -q

# CI regression of the headline numbers: the `ci` profile through the real pipeline, then a comparison
# with tests/regression/expected.json (exit 1 on a regression). `make bless` rewrites the expectations.
regress: venv data
	eebench study --profile ci --dir .ci-profile
	eebench regress --headline .ci-profile/results/headline.json --expected tests/regression/expected.json

bless: venv data
	eebench study --profile ci --dir .ci-profile
	eebench bless --headline .ci-profile/results/headline.json --expected tests/regression/expected.json

clean-smoke:
	rm -rf .smoke
