# Two commands set up everything on a fresh machine: `make bench-latency` and `make test`.
# Where a Python that already imports torch is found (a GPU image, an activated environment), it is used as
# is; otherwise a local .venv gets the CPU build of torch first, so no multi-GB CUDA wheel is pulled.
SYS_PY ?= python3
HAVE_TORCH := $(shell $(SYS_PY) -c "import torch" >/dev/null 2>&1 && echo yes)
ifeq ($(HAVE_TORCH),yes)
PY ?= $(SYS_PY)
else
PY ?= .venv/bin/python
endif
STAMP := .stamp-$(subst /,_,$(PY))

.PHONY: setup test lint bench-latency bench-op plots registry clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@if [ "$(PY)" = ".venv/bin/python" ]; then \
	  [ -x .venv/bin/python ] || $(SYS_PY) -m venv .venv; \
	  .venv/bin/python -m pip install -q --upgrade pip; \
	  .venv/bin/python -m pip install -q torch==2.13.0; \
	fi
	$(PY) -m pip install -q -e ".[dev]" || { echo "setup: pip could not install ttt-bench's dependencies for $(PY)" >&2; exit 1; }
	@touch $@

test: $(STAMP)
	TRITON_INTERPRET=1 $(PY) -m pytest tests

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

registry: $(STAMP)
	$(PY) -m bench.registry

bench-latency: $(STAMP)
	$(PY) -m bench.run +sweep=latency

bench-op: $(STAMP)
	$(PY) -m bench.run +sweep=op

plots: $(STAMP)
	$(PY) -m plots

clean:
	rm -rf .stamp-* outputs multirun .pytest_cache
