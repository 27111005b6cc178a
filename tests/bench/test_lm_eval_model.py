"""bench/lm_eval_model.py through lm-eval's own interface, on a tiny saved checkpoint, with the local tasks."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'ttt-bench[eval]')")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from bench import checkpoint, data, registry  # noqa: E402
from bench.lm_eval_model import TTTBenchLM  # noqa: E402
from bench.lm_eval_tasks import export  # noqa: E402

MAX_LEN = 64
ALPHABET = "abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    size = OmegaConf.to_container(registry.size_config("tiny"), resolve=True)
    size["vocab_size"] = 257
    torch.manual_seed(0)
    net = registry.build("ttt_linear", size)
    path = tmp_path_factory.mktemp("ckpt") / "ttt_linear"
    meta = {"model": "ttt_linear", "size": size, "tokenizer": "byte", "corpus": "python-stdlib", "train_ctx": MAX_LEN}
    checkpoint.save(path, net, meta)
    return path


@pytest.fixture(scope="module")
def lm(ckpt):
    return TTTBenchLM(checkpoint=str(ckpt), device="cpu", batch_size=3)


def req(kind: str, args: tuple) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def direct_logprob(lm: TTTBenchLM, ctx_ids: list[int], cont_ids: list[int]) -> float:
    ids = torch.tensor([ctx_ids + cont_ids])
    with torch.inference_mode():
        logp = F.log_softmax(lm.net(ids[:, :-1]).float(), -1)[0]
    n = len(cont_ids)
    return float(logp[-n:].gather(-1, torch.tensor(cont_ids)[:, None]).sum())


def test_model_args_and_tokenizer(lm, ckpt):
    assert lm.max_length == MAX_LEN and lm.impl == "ttt_linear/dual" and lm.batch_size == 3
    assert lm.eot_token_id == 256 and lm.prefix_token_id == 256 and lm.tok_encode("ab") == [97, 98]
    named = lm_eval.api.registry.get_model("ttt-bench").create_from_arg_string(
        f"checkpoint={ckpt},batch_size=2,max_length=32", {"batch_size": 1, "device": "cuda", "max_batch_size": None}
    )  # model_args win over the CLI's --batch_size; its default --device cuda falls back to the CPU here
    assert named.batch_size == 2 and named.max_length == 32 and named.device.type == "cpu"


def test_loglikelihood_equals_direct_sum(lm):
    pairs = [("def f(x):\n    return", " x + 1"), ("import os", "\n"), ("a" * 90, "bcd"), ("", "print(1)")]
    got = lm.loglikelihood([req("loglikelihood", p) for p in pairs], disable_tqdm=True)
    for (ctx, cont), (ll, greedy) in zip(pairs, got):
        c, t = (list(ctx.encode()), list(cont.encode())) if ctx else ([256], list(cont.encode()))
        inp = (c + t)[-(MAX_LEN + 1) :]  # the last max_length inputs, as lm-eval's HF model does
        assert ll == pytest.approx(direct_logprob(lm, inp[: len(inp) - len(t)], t), abs=1e-4)
        assert isinstance(greedy, bool)


def test_loglikelihood_rolling_is_minus_the_summed_loss(lm):
    doc = "for i in range(3):\n    print(i)\n"
    ids = torch.tensor([[256, *doc.encode()]])
    with torch.inference_mode():
        loss = F.cross_entropy(lm.net(ids[:, :-1]).float()[0], ids[0, 1:], reduction="sum")
    (ll,) = lm.loglikelihood_rolling([req("loglikelihood_rolling", (doc,))], disable_tqdm=True)
    assert ll == pytest.approx(-float(loss), abs=1e-3)


def test_rolling_windows_shift_by_one(ckpt, monkeypatch):
    """A doc 3x longer than max_length: a model that puts all mass on the true next token scores ~0 only if every
    window's targets are its inputs shifted by one; a uniform one scores -n log V (every token once)."""
    lm = TTTBenchLM(checkpoint=str(ckpt), device="cpu", batch_size=2, check=False)
    nxt = torch.arange(257)
    for a, b in zip(ALPHABET, ALPHABET[1:] + ALPHABET[0]):
        nxt[ord(a)] = ord(b)
    nxt[256] = ord("a")  # after the EOS prefix the document starts
    doc = ALPHABET * 7  # 182 tokens
    monkeypatch.setattr(lm.net, "forward", lambda ids, logits_to_keep=0: 100.0 * F.one_hot(nxt[ids], 257).float())
    (ll,) = lm.loglikelihood_rolling([req("loglikelihood_rolling", (doc,))], disable_tqdm=True)
    assert ll == pytest.approx(0.0, abs=1e-6)
    monkeypatch.setattr(lm.net, "forward", lambda ids, logits_to_keep=0: torch.zeros(*ids.shape, 257))
    (ll,) = lm.loglikelihood_rolling([req("loglikelihood_rolling", (doc,))], disable_tqdm=True)
    assert ll == pytest.approx(-len(doc) * math.log(257), rel=1e-6)


def test_generate_until_stops(lm):
    ctx = "def main():\n    "
    (free,) = lm.generate_until([req("generate_until", (ctx, {"until": [], "max_gen_toks": 12}))], disable_tqdm=True)
    assert 0 < len(free) and len(free.encode("utf-8", "replace")) <= 12 * 3
    stop = free[len(free) // 2]
    want = free[: free.index(stop)]
    (cut,) = lm.generate_until([req("generate_until", (ctx, {"until": [stop], "max_gen_toks": 12}))], disable_tqdm=True)
    assert cut == want and stop not in cut


def test_simple_evaluate_local_tasks(ckpt, tmp_path):
    docs = [
        data.Document(f"m{i}.py", f"# module {i}\n" + "".join(f"x{i}_{j} = {j * i}\n" for j in range(40)))
        for i in range(6)
    ]
    out = export.export(tmp_path / "tasks", corpus=data.Corpus("python-stdlib", docs, val_percent=100), n_mc=6)
    items = [json.loads(line) for line in (out / "ttt_bench_stdlib_mc.jsonl").read_text().splitlines()]
    assert len(items) == 6 and all(len(i["choices"]) == 4 and i["choices"][i["label"]] for i in items)
    assert export.export(tmp_path / "again", corpus=data.Corpus("python-stdlib", docs, val_percent=100), n_mc=6)
    assert (tmp_path / "again" / "ttt_bench_stdlib_mc.jsonl").read_text() == (
        out / "ttt_bench_stdlib_mc.jsonl"
    ).read_text()

    res = lm_eval.simple_evaluate(
        model="ttt-bench",
        model_args=f"checkpoint={ckpt},device=cpu,batch_size=4",
        tasks=["ttt_bench_stdlib_ppl", "ttt_bench_stdlib_mc"],
        task_manager=TaskManager(include_path=str(out), include_defaults=False),
        limit=4,
        bootstrap_iters=0,
    )
    ppl, mc = res["results"]["ttt_bench_stdlib_ppl"], res["results"]["ttt_bench_stdlib_mc"]
    for key in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert math.isfinite(ppl[key]) and ppl[key] > 0
    assert 0 <= mc["acc,none"] <= 1 and 0 <= mc["acc_norm,none"] <= 1
    assert 100 < ppl["byte_perplexity,none"] < 400  # untrained: about uniform over 257 byte tokens
