# `make plan` and `make test` work on a fresh clone: they create .venv and install
# what they need first. CI runs `make test` through .ci/run.
PYTHON ?= python3
VENV   ?= .venv
STACK  ?= dev
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian packages the tests drive for real: the failover lab (keepalived, Redis, iptables in
# network namespaces), the VPN lab (strongSwan's charon with userspace IPsec, swanctl) and the
# checkers of the VPN gateway's files (FRR's vtysh, shellcheck, systemd-analyze), nginx (the private cloud's
# ingress settings, run for real on loopback), the image builder and its registry (buildah,
# skopeo, docker-registry, debootstrap for a base without a registry), and node for
# the CloudFront Function.
DEB_PACKAGES := keepalived redis-server iptables iproute2 strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins frr shellcheck systemd lua5.4 xfsprogs prometheus prometheus-alertmanager nginx buildah skopeo docker-registry debootstrap

.PHONY: plan plan-json test docs bench clean serve-demo image image-mirror images images-prune images-prune-if-full

$(STAMP): pyproject.toml requirements.txt inference_image/pyproject.toml inference_image/VERSION inference_image/requirements.txt components/mirror/requirements.txt components/failover/runtime/requirements.txt
	@# As root, install the Debian packages the machine lacks; otherwise say which are missing.
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done; command -v node >/dev/null || echo nodejs); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else echo "warning: missing Debian packages (tests that drive them will fail): $$missing"; fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r inference_image/requirements.txt -r components/mirror/requirements.txt
	$(BIN)/python -m pip install --quiet --require-hashes -r components/failover/runtime/requirements.txt
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

## Container images from their own Dockerfiles (docker buildx, else buildah): make image [REGISTRY=host:port]
# BASE=local builds on a base made from Debian packages (no registry); auto picks it when the
# Dockerfile's base can't be pulled. The tag, id and digest are printed last.
IMAGE_FLAGS = $(if $(BASE),--base $(BASE)) $(if $(REGISTRY),--push $(REGISTRY) $(if $(filter 127.0.0.1:% localhost:%,$(REGISTRY)),--no-tls-verify))
image: $(STAMP)
	$(BIN)/platformctl image build inference $(IMAGE_FLAGS)

image-mirror: $(STAMP)
	$(BIN)/platformctl image build mirror $(IMAGE_FLAGS)

images: image image-mirror

## Free disk: drop image revisions other than the working tree's and dangling layers
## (.ci/run does it only when the disk runs low; a later build of changed dependencies starts cold)
images-prune-if-full: $(STAMP)
	$(BIN)/platformctl image prune --below-free-gib 30

images-prune: $(STAMP)
	$(BIN)/platformctl image prune

## The whole test suite
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

## Regenerate the config reference and Pulumi.yaml's config block from the models
docs: $(STAMP)
	$(BIN)/python -m platformctl.reference --write-readme README.md
	$(BIN)/python -m platformctl.reference --write-pulumi-yaml Pulumi.yaml
	$(BIN)/platformctl cost readme --write README.md

## Benchmarks (results in docs/): offline plan, batching cores, serving vs peers, model mirror, cost, failover, VPN failover
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/plan_bench.py
	$(BIN)/python bench/batching_eval.py
	$(BIN)/python bench/serve_bench.py
	$(BIN)/python bench/mirror_bench.py
	$(BIN)/python bench/cost_bench.py
	$(BIN)/python bench/failover_bench.py --runs 5 --sweep 0.05 0.1 0.25 0.5
	$(BIN)/python bench/vpn_failover_bench.py --runs 1

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis plan-*.json
