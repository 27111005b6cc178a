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

.PHONY: setup test lint bench-latency bench-op bench-ppl plots registry clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@if [ "$(PY)" = ".venv/bin/python" ]; then \
	  [ -x .venv/bin/python ] || $(SYS_PY) -m venv .venv; \
	  .venv/bin/python -m pip install -q --upgrade pip; \
	  .venv/bin/python -m pip install -q torch==2.13.0; \
	fi
	$(PY) -m pip install -q -e ".[dev,eval]" || { echo "setup: pip could not install ttt-bench's dependencies for $(PY)" >&2; exit 1; }
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

# Matched training of the four small models on the offline corpus, then perplexity vs ctx and loss by token index.
# The settings of the committed H200 run (bench/notes/session3_run2_gpu.sh: ctx 32k, TTT steps in a CUDA graph);
# PPL_DATA=data.root=DIR reads an exported corpus (python -m bench.data export DIR). Without a GPU, a tiny run.
PPL_MODELS ?= transformer mamba ttt_linear ttt_mlp
PPL_DATA ?=
PPL_GPU_ARGS ?= size=small train.ctx=32768 train.batch=4 train.tokens=6291456 train.val_windows=2 $(PPL_DATA)
PPL_CPU_ARGS ?= size=tiny train.ctx=256 train.batch=4 train.tokens=32768
bench-ppl: $(STAMP)
	@if $(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then \
	  args="$(PPL_GPU_ARGS)"; dir=checkpoints; \
	else \
	  echo "bench-ppl: no GPU, so a small labelled CPU run (tiny models, few tokens), not a paper measurement"; \
	  args="$(PPL_CPU_ARGS)"; dir=checkpoints/cpu; \
	fi; \
	ckpts=""; for m in $(PPL_MODELS); do \
	  $(PY) -m bench.train model=$$m $$args out=$$dir/$$m || exit 1; ckpts="$$ckpts,$$dir/$$m"; \
	done; \
	$(PY) -m bench.ppl "checkpoints=[$${ckpts#,}]" allow_extrapolation=true

plots: $(STAMP)
	$(PY) -m plots

clean:
	rm -rf .stamp-* outputs multirun .pytest_cache
