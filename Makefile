# Two entry points, each doing its own set-up on a fresh machine:
#   make deploy   create the virtualenv and run the deploy (pass ARGS="--dry --diff")
#   make test     install the test dependencies and run every test tier
VENV := .venv
PYTHON := $(VENV)/bin/python
ARGS ?=
# Debian packages the test hosts, the Docker engine and the validators need.
TEST_PACKAGES := debootstrap docker.io iproute2 openssh-client shellcheck util-linux curl \
	ca-certificates xz-utils

.PHONY: venv deploy test test-deps

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

deploy: venv
	$(VENV)/bin/pyinfra inventory.py deploy.py $(ARGS)

test-deps:
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(TEST_PACKAGES) >/dev/null || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(TEST_PACKAGES); }

test: test-deps venv
	$(PYTHON) tests/run_tiers.py
