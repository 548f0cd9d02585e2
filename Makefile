# `make plan` and `make test` work on a fresh clone: they create .venv and install
# what they need first. CI runs `make test` through .ci/run.
PYTHON ?= python3
VENV   ?= .venv
STACK  ?= dev
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: plan plan-json test docs bench clean serve-demo

$(STAMP): pyproject.toml requirements.txt inference_image/pyproject.toml inference_image/requirements.txt components/mirror/requirements.txt
	@# node runs the CloudFront Function in tests; as root, install it if the machine lacks it.
	@command -v node >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq nodejs >/dev/null; } \
		|| echo "warning: node not found and not root: the edge-function tests will fail; install nodejs"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r inference_image/requirements.txt -r components/mirror/requirements.txt
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e inference_image
	touch $@

## The inference server with the offline demo model, on loopback, no auth
serve-demo: $(STAMP)
	$(BIN)/inference-server --demo --no-auth --host 127.0.0.1 --port 8000

## Offline plan of a stack (no cloud account, no Pulumi CLI): make plan STACK=prod
plan: $(STAMP)
	$(BIN)/platformctl plan --stack $(STACK)

plan-json: $(STAMP)
	$(BIN)/platformctl plan --stack $(STACK) --format json --output plan-$(STACK).json

## The whole test suite
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

## Regenerate the config reference and Pulumi.yaml's config block from the models
docs: $(STAMP)
	$(BIN)/python -m platformctl.reference --write-readme README.md
	$(BIN)/python -m platformctl.reference --write-pulumi-yaml Pulumi.yaml
	$(BIN)/platformctl cost readme --write README.md

## Benchmarks (results in docs/): offline plan, batching cores, serving vs peers, model mirror
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/plan_bench.py
	$(BIN)/python bench/batching_eval.py
	$(BIN)/python bench/serve_bench.py
	$(BIN)/python bench/mirror_bench.py
	$(BIN)/python bench/cost_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis plan-*.json
