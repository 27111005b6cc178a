"""Write the local lm-eval tasks (data + task YAMLs) for this machine's corpus; prints the directory to pass to
lm-eval's --include_path.

    python -m bench.lm_eval_tasks.export [--out DIR] [--root CORPUS_DIR] [--n-mc 500] [--seed 0] [--max-docs N]

Tasks (tag `ttt_bench` runs both):
  ttt_bench_stdlib_ppl  each validation document of the corpus, scored whole by lm-eval's rolling windows
                        (word_perplexity, byte_perplexity, bits_per_byte)
  ttt_bench_stdlib_mc   the ~200 characters before a line of a validation document; choose that line among 4:
                        the true one and 3 lines drawn from other validation documents (re-indented like the
                        true line, so indentation gives nothing away); acc, acc_norm

The data depend on the corpus this Python reads (its checksum names the default directory,
$TTT_BENCH_CACHE/lm_eval/<corpus>-<checksum[:12]>, default root ~/.cache/ttt-bench), so they are generated, not
committed. lm-eval resolves `dataset_kwargs.data_files` against the working directory, not the YAML's directory, so
each task YAML is written next to its data with absolute paths and `include`s the committed definition in this
package (`_stdlib_ppl.yaml`, `_stdlib_mc.yaml`). The same corpus, seed and options give the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import yaml

from bench import data
from ttt.errors import UserError

HERE = Path(__file__).resolve().parent
PPL_TASK, MC_TASK = "ttt_bench_stdlib_ppl", "ttt_bench_stdlib_mc"
CONTEXT_CHARS = 200
LINE_CHARS = (8, 120)  # a candidate line's stripped length: no blank or one-token lines, no giant literals
N_CHOICES = 4


def default_dir(corpus: data.Corpus) -> Path:
    return data.cache_root() / "lm_eval" / f"{corpus.name}-{corpus.checksum[:12]}"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a reader (a parallel lm-eval) sees the old file or the new one, never half


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _lines(text: str) -> list[tuple[int, str]]:
    """(offset of the line's first character, the line without its newline)."""
    out, pos = [], 0
    for line in text.split("\n"):
        out.append((pos, line))
        pos += len(line) + 1
    return out


def _fits(line: str) -> bool:
    return LINE_CHARS[0] <= len(line.strip()) <= LINE_CHARS[1]


def mc_items(docs: list[data.Document], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` next-line questions (fewer if the documents hold fewer candidate lines), drawn with `seed`."""
    if len({d.path for d in docs}) < 2:
        raise UserError(
            "the multiple-choice task needs at least two validation documents (distractors come from others)"
        )
    rng = random.Random(seed)
    positions = [
        (i, off, line)
        for i, d in enumerate(docs)
        for off, line in _lines(d.text)
        if off >= CONTEXT_CHARS and _fits(line)
    ]
    pool = sorted({(i, line.strip()) for i, d in enumerate(docs) for _, line in _lines(d.text) if _fits(line)})
    items = []
    for k, p in enumerate(sorted(rng.sample(range(len(positions)), min(n, len(positions))))):
        i, off, line = positions[p]
        indent = line[: len(line) - len(line.lstrip())]
        seen, distractors = {line.strip()}, []
        while len(distractors) < N_CHOICES - 1:
            j, content = pool[rng.randrange(len(pool))]
            if j != i and content not in seen:
                seen.add(content)
                distractors.append(indent + content)
        label = rng.randrange(N_CHOICES)
        choices = distractors[:label] + [line] + distractors[label:]
        context = docs[i].text[off - CONTEXT_CHARS : off]
        items.append({"id": k, "path": docs[i].path, "context": context, "choices": choices, "label": label})
    return items


def _task_yaml(task: str, base: str, data_file: Path) -> str:
    cfg = {
        "include": str(HERE / base),
        "task": task,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"validation": str(data_file.resolve())}},
    }
    return "# Written by python -m bench.lm_eval_tasks.export; regenerate rather than edit.\n" + yaml.safe_dump(
        cfg, sort_keys=False
    )


def export(
    out: str | Path | None = None,
    *,
    corpus: data.Corpus | None = None,
    n_mc: int = 500,
    seed: int = 0,
    max_docs: int | None = None,
) -> Path:
    """Write both tasks' data and YAMLs into `out` (default: the cache directory of this corpus); returns it."""
    corpus = corpus if corpus is not None else data.load_corpus()
    docs = [d for d in corpus.split("validation") if d.text.strip()]
    if not docs:
        raise UserError(f"{corpus.name} has no validation documents")
    out = Path(out) if out is not None else default_dir(corpus)
    out.mkdir(parents=True, exist_ok=True)
    ppl_docs = docs[:max_docs] if max_docs else docs
    items = mc_items(docs, n_mc, seed)
    files = {PPL_TASK: (ppl_docs, "_stdlib_ppl.yaml"), MC_TASK: (items, "_stdlib_mc.yaml")}
    for task, (rows, base) in files.items():
        if task == PPL_TASK:
            rows = [{"path": d.path, "text": d.text} for d in rows]
        data_file = out / f"{task}.jsonl"
        _write(data_file, _jsonl(rows))
        _write(out / f"{task}.yaml", _task_yaml(task, base, data_file))
    manifest = {
        "corpus": corpus.name,
        "corpus_checksum": corpus.checksum,
        "val_percent": corpus.val_percent,
        "seed": seed,
        PPL_TASK: len(ppl_docs),
        MC_TASK: len(items),
    }
    _write(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.lm_eval_tasks.export", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="directory (default: the cache directory named by the corpus checksum)")
    ap.add_argument("--corpus", default="python-stdlib")
    ap.add_argument("--root", default=None, help="read the corpus from this directory (python -m bench.data export)")
    ap.add_argument("--val-percent", type=int, default=5)
    ap.add_argument("--n-mc", type=int, default=500, help="multiple-choice questions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-docs", type=int, default=None, help="perplexity documents (default: all)")
    a = ap.parse_args(argv)
    try:
        corpus = data.load_corpus(a.corpus, root=a.root, val_percent=a.val_percent)
        out = export(a.out, corpus=corpus, n_mc=a.n_mc, seed=a.seed, max_docs=a.max_docs)
    except UserError as e:
        sys.exit("error: " + " ".join(str(e).split()))
    print(f"tasks {PPL_TASK}, {MC_TASK} (tag ttt_bench) written; pass --include_path {out}", file=sys.stderr)
    print(out)


if __name__ == "__main__":
    main()
