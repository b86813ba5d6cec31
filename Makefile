SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
BERNINI := $(VENV)/bin/bernini
DEV := $(VENV)/bin/bernini-dev
# Re-install whenever pyproject.toml changes; the stamp lives inside the git-ignored venv.
VENV_STAMP := $(VENV)/.installed-$(shell cat pyproject.toml hack/localdev/pyproject.toml | sha256sum | cut -c1-12)

CRD_FILES := crds/bernini.dev_berninideployments.yaml charts/bernini-operator/crds/bernini.dev_berninideployments.yaml

.PHONY: help venv weights controlplane gateway argocd promtool monitoring node-packages images cluster-up cluster-down demo demo-gitops test crds docs bench-reconcile bench-pull bench-serve bench-autoscale bench-cost bench-e2e bench-chaos gpu-wheels check-gpu

help:
	@echo "make demo          run the operator's main job on a local control plane"
	@echo "make demo-gitops   the same, shipped by a real Argo CD from local git repositories (watch it sync)"
	@echo "make test          run the whole test suite (builds what it needs)"
	@echo "make weights       train/cache the reference model and print how well it draws each class"
	@echo "make controlplane  build/cache etcd, kube-*, kubectl, KWOK, KubeRay operator, helm"
	@echo "make gateway       build/cache Traefik and the Gateway API CRDs (incremental upgrades on the real nodes)"
	@echo "make argocd        build/cache Argo CD (controller, repo-server) for the GitOps tests"
	@echo "make promtool      build/cache promtool for the PrometheusRule tests"
	@echo "make monitoring    build/cache Prometheus and the Prometheus Operator (make demo MONITORING=1, the tests)"
	@echo "make images        build/cache the serving, pause and KubeRay images for the real nodes"
	@echo "make cluster-up    start the local control plane (kubeconfig: .local/kubeconfig)"
	@echo "make cluster-down  stop it"
	@echo "make crds          regenerate crds/ and the chart's CRD copy from the pydantic models"
	@echo "make docs          regenerate the spec reference, the chart README and the reasons table"
	@echo "make gpu-wheels    download the few wheels make check-gpu needs (run where there is network)"
	@echo "make check-gpu     on a GPU machine: compile for cuda, run the stages, GPU beside CPU"

$(VENV_STAMP): pyproject.toml hack/localdev/pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --python $(PY) -q -e '.[dev]' -e hack/localdev
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(VENV_STAMP)

weights: venv
	@$(BERNINI) train

controlplane:
	@bash hack/controlplane/build.sh

gateway:
	@bash hack/gateway/build.sh

argocd:
	@bash hack/argocd/build.sh

promtool:
	@bash hack/promtool/build.sh

monitoring:
	@bash hack/monitoring/build.sh

node-packages:
	@bash hack/install-node-packages.sh

images: venv controlplane gateway node-packages
	@bash hack/images/build.sh > /dev/null

cluster-up: venv controlplane
	@$(DEV) cluster up

cluster-down: venv
	@$(DEV) cluster down

# MONITORING=1: the operator from its chart, watched by a Prometheus Operator and a Prometheus it manages.
demo: venv weights controlplane $(if $(MONITORING),monitoring) images
	@$(DEV) demo $(if $(MONITORING),--monitoring)

demo-gitops: venv controlplane argocd images
	@$(DEV) demo-gitops

crds: venv
	@$(BERNINI) crds $(CRD_FILES)

docs: venv
	@$(PY) hack/gendocs.py

test: venv weights controlplane argocd promtool monitoring images
	$(PY) -m pytest

bench-reconcile: venv controlplane
	$(PY) -m tests.bench.reconcile

bench-pull: venv controlplane
	$(PY) -m tests.bench.pull

bench-serve: venv controlplane
	$(PY) -m tests.bench.serve

bench-autoscale: venv controlplane
	$(PY) -m tests.bench.autoscale

bench-cost: venv controlplane images
	$(PY) -m tests.bench.cost

bench-e2e: venv controlplane images
	$(PY) -m tests.bench.e2e

bench-chaos: venv controlplane images
	$(PY) -m tests.bench.chaos

# The GPU machine has PyTorch but no network, Ray or pydantic: fetch its few wheels here, carry them there.
gpu-wheels:
	@mkdir -p .gpu-wheels
	python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .gpu-wheels -r hack/gpu/wheels.txt

check-gpu:
	@bash hack/gpu/check.sh
