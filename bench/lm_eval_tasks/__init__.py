"""Local, offline lm-eval tasks over the default corpus (`python -m bench.lm_eval_tasks.export` writes them)."""
