# Every target creates the environment it needs: a fresh clone runs `make local` or `make test` directly.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP := $(VENV)/checkov/.installed-$(CHECKOV_VERSION)
NODE_STAMP := node_modules/.installed-$(shell cksum package-lock.json | cut -d' ' -f1)
export AWS_DEFAULT_REGION ?= us-east-1
# `sam build` looks for the Lambda runtime (python3.13) on PATH: the environment's own interpreter.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: local test test-deployed lint bench clean venv checkov node_modules

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PYTHON) || { echo "creating $(VENV) with $$(scripts/find-python)"; "$$(scripts/find-python)" -m venv $(VENV); }
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

# checkov pins boto3/pytest versions that clash with ours: it gets its own environment, on our PATH.
# Only the tests scan with it, so `make local` does not wait for it.
checkov: $(CHECKOV_STAMP)

$(CHECKOV_STAMP): | $(STAMP)
	$(PYTHON) -m venv $(VENV)/checkov && $(VENV)/checkov/bin/pip install --quiet checkov==$(CHECKOV_VERSION)
	ln -sf ../checkov/bin/checkov $(BIN)/checkov
	@touch $@

# xterm.js and its fit addon for the gateway's page, exactly as package-lock.json pins them.
node_modules: $(NODE_STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

local: venv node_modules ## run the whole system on this machine
	$(BIN)/cloudide local

test: venv checkov node_modules ## everything CI checks
	$(BIN)/pytest

test-deployed: venv ## the first-deploy acceptance check against a real stack: make test-deployed STACK=<name>
	@test -n "$(STACK)" || { echo "usage: make test-deployed STACK=<stack name> (and CLOUDIDE_TOKEN=<ID token>)"; exit 2; }
	AWS_SAM_STACK_NAME=$(STACK) $(BIN)/pytest -m deployed tests/deployed

lint: venv ## template, workflow and code checks
	$(BIN)/cfn-lint template.yaml
	$(BIN)/sam validate --lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: venv ## write bench/results/<name>.json
	$(PYTHON) -m bench

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .aws-sam
