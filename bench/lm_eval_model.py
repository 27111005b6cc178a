"""ttt-bench checkpoints as an lm-eval (EleutherAI lm-evaluation-harness) model: `--model ttt-bench`.

    python -m bench.lm_eval --model ttt-bench --model_args checkpoint=checkpoints/ttt_linear-small-32k \\
        --include_path "$(python -m bench.lm_eval_tasks.export)" --tasks ttt_bench_stdlib_ppl,ttt_bench_stdlib_mc

model_args: `checkpoint` (a bench/checkpoint.py directory; required), `device` (default cuda if present),
`dtype` (bfloat16 on CUDA, float32 on CPU), `impl` (default: the model's fastest on the device, checked against its
reference once), `batch_size` (sequences per forward; "auto" means 16), `max_length` (default the checkpoint's
train ctx: longer inputs keep their last max_length tokens, and rolling perplexity uses windows of it),
`max_gen_toks` (default 256), `check` (default true), `corpus_root` (where a BPE tokenizer's corpus lives).
Tokens come from the bench.data tokenizer the checkpoint was trained with; the EOS token is lm-eval's prefix token
(training put an EOS before every document).

lm-eval (0.4.x) has no entry-point group for models: its registry knows a model once the module that calls
`register_model` is imported. `python -m bench.lm_eval` imports this module, then runs lm-eval's own command line;
from Python, `import bench.lm_eval_model` before `lm_eval.simple_evaluate(model="ttt-bench", ...)`, or pass a
`TTTBenchLM` instance.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401  - the built-in names first: get_model() imports them only into an empty registry
import torch
import torch.nn.functional as F
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from bench import checkpoint as ckpt_io
from bench import data
from bench.plan import DTYPES, dtype_name, resolve_device
from bench.ppl import check_impl
from ttt.errors import UserError

log = logging.getLogger(__name__)
DEFAULT_MAX_LENGTH = 2048  # a checkpoint without a train ctx in its meta
AUTO_BATCH = 16

# (context tokens, continuation tokens): score the continuation given the context.
Pair = tuple[list[int], list[int]]


def checkpoint_tokenizer(meta: dict[str, Any], corpus_root: str | None = None) -> data.Tokenizer:
    """The bench.data tokenizer a checkpoint was trained with (a BPE is rebuilt from its corpus's cache)."""
    name = str(meta.get("tokenizer") or "byte")
    dmeta = meta.get("data") or {}
    if name == "byte":
        return data.get_tokenizer(name)
    if name == "llama2":
        return data.get_tokenizer(name, path=dmeta.get("tokenizer_path"))
    root = corpus_root or dmeta.get("root")
    corpus = data.load_corpus(
        str(meta.get("corpus") or "python-stdlib"), root=root, val_percent=int(dmeta.get("val_percent", 5))
    )
    return data.get_tokenizer(name, corpus=corpus)


def _flag(v: Any) -> bool:
    return v if isinstance(v, bool) else str(v).strip().lower() in ("1", "true", "yes")


@register_model("ttt-bench")
class TTTBenchLM(TemplateLM):
    """One checkpoint of the matched models (TTT-Linear, TTT-MLP, Transformer, Mamba) behind lm-eval's interface."""

    def __init__(
        self,
        checkpoint: str,
        device: str | None = None,
        dtype: str | None = None,
        impl: str | None = None,
        batch_size: int | str | None = 1,
        max_batch_size: int | None = None,  # lm-eval passes it; batches here are fixed, so it is not used
        max_length: int | str | None = None,
        max_gen_toks: int | str = 256,
        check: bool | str = True,
        corpus_root: str | None = None,
    ) -> None:
        super().__init__()
        dev = resolve_device(device or "auto")
        self._device = dev
        self.dtype = dtype_name(
            dtype if dtype not in (None, "auto") else ("bfloat16" if dev.type == "cuda" else "float32")
        )
        self.checkpoint = Path(checkpoint)
        self.meta = checkpoint_meta = ckpt_io.load_meta(self.checkpoint)
        self.net, _ = ckpt_io.load(self.checkpoint, device=dev, dtype=DTYPES[self.dtype], impl=impl or None)
        self.model_name = str(checkpoint_meta["model"])
        if _flag(check):
            vocab = int(checkpoint_meta["size"]["vocab_size"])
            _, err = check_impl(self.net, self.model_name, self.dtype, vocab=vocab)
            if err:
                raise UserError(err)
        self.tok = checkpoint_tokenizer(checkpoint_meta, corpus_root)
        self.train_ctx = int(checkpoint_meta["train_ctx"]) if checkpoint_meta.get("train_ctx") else None
        self._max_length = int(max_length) if max_length not in (None, "") else (self.train_ctx or DEFAULT_MAX_LENGTH)
        if self.model_name == "transformer" and self.train_ctx and self._max_length > self.train_ctx:
            log.warning(
                "max_length=%d exceeds the Transformer's train ctx %d: RoPE positions beyond it were never trained",
                self._max_length,
                self.train_ctx,
            )
        self.batch_size = AUTO_BATCH if str(batch_size).startswith("auto") else max(1, int(batch_size or 1))
        self.max_gen_toks = int(max_gen_toks)
        self.impl = f"{self.model_name}/{self.net.impl}"
        log.info(
            "ttt-bench: %s (%s, %s on %s), max_length %d", checkpoint, self.impl, self.dtype, dev, self._max_length
        )

    @classmethod
    def create_from_arg_obj(
        cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None
    ) -> TTTBenchLM:
        # lm-eval's CLI always passes its --batch_size (default 1) and --device beside model_args; a value named in
        # model_args wins instead of colliding with them ("got multiple values for keyword argument").
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        if str(extra.get("device", "")).startswith("cuda") and not torch.cuda.is_available():
            # The CLI's --device defaults to cuda; HFLM falls back to the CPU too. device= in model_args is strict.
            log.warning("ttt-bench: no CUDA device here; running on the CPU (device=cuda in model_args insists)")
            extra["device"] = "cpu"
        return cls(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict[str, Any] | None = None) -> TTTBenchLM:
        return cls.create_from_arg_obj(lm_utils.simple_parse_args_string(arg_string), additional_config)

    # ---- what lm-eval asks of a TemplateLM -----------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return int(getattr(self.tok, "eos_id", self.tok.vocab_size - 1))

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return self.tok.name

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return list(self.tok.encode(string))

    def tok_decode(self, tokens: list[int], **kwargs: Any) -> str:
        return self.tok.decode(list(tokens))

    # ---- scoring -------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def _score(self, pairs: list[Pair], disable_tqdm: bool = True) -> list[tuple[float, bool]]:
        """(sum of log-probs of the continuation, whether greedy decoding gives it) per pair. The input is context +
        continuation minus its last token, cut to the last max_length tokens; batches of similar length, padded on
        the right (every model here is causal: padding after a position cannot change its logits)."""
        out: list[tuple[float, bool] | None] = [None] * len(pairs)
        inputs = []
        for ctx, cont in pairs:
            if not cont:
                raise ValueError("lm-eval asked for the log-likelihood of an empty continuation")
            inputs.append((ctx + cont)[-(self.max_length + 1) :][:-1])
        order = sorted(range(len(pairs)), key=lambda i: -len(inputs[i]))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, disable=disable_tqdm, desc="ttt-bench loglikelihood"):
            width = len(inputs[batch[0]])
            x = torch.full((len(batch), width), self.eot_token_id, dtype=torch.long)
            for row, i in enumerate(batch):
                x[row, : len(inputs[i])] = torch.tensor(inputs[i], dtype=torch.long)
            logits = self.net(x.to(self._device))
            for row, i in enumerate(batch):
                cont = pairs[i][1]
                n, end = len(cont), len(inputs[i])
                logp = F.log_softmax(logits[row, end - n : end].float(), dim=-1)
                target = torch.tensor(cont, dtype=torch.long, device=logp.device)
                ll = float(logp.gather(-1, target[:, None]).sum())
                greedy = bool((logp.argmax(-1) == target).all())
                out[i] = (ll, greedy)
        return out  # type: ignore[return-value]

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        scores = self._score([(ctx, cont) for _, ctx, cont in requests], disable_tqdm)
        for (key, _, _), score in zip(requests, scores):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, score)
        return scores

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Whole-document log-likelihood in lm-eval's rolling windows of max_length tokens (each token scored once,
        the first after the EOS prefix), windows of all documents batched together."""
        windows: list[Pair] = []
        owner: list[int] = []
        for i, (string,) in enumerate(req.args for req in requests):
            for pair in map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append(pair)
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (ll, _) in zip(owner, self._score(windows, disable_tqdm)):
            totals[i] += ll
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ---- generation ----------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def _greedy(self, context: list[int], until: list[str], max_new: int) -> str:
        """Greedy tokens from the model's own cache (prefill, then decode_step), stopping at EOS, at the first
        `until` string in the text, or after max_new tokens; the text is cut before the stop string."""
        x = torch.tensor([context], dtype=torch.long, device=self._device)
        cache = self.net.allocate_cache(1, len(context) + max_new)
        logits = self.net.prefill(x, cache)
        out: list[int] = []
        text = ""
        for step in range(max_new):
            tok = int(logits[0].argmax())
            if tok == self.eot_token_id:
                break
            out.append(tok)
            text = self.tok_decode(out)
            if any(u in text for u in until) or step == max_new - 1:
                break
            logits = self.net.decode_step(torch.tensor([[tok]], device=self._device), cache)
        cut = min((text.index(u) for u in until if u in text), default=len(text))
        return text[:cut]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        outs = []
        for req in tqdm(requests, disable=disable_tqdm, desc="ttt-bench generate_until"):
            context, gen_kwargs = req.args
            kw = dict(gen_kwargs or {})
            until = kw.get("until") or []
            until = [until] if isinstance(until, str) else [u for u in until if u]
            max_new = int(kw.get("max_gen_toks") or kw.get("max_new_tokens") or self.max_gen_toks)
            if kw.get("do_sample"):
                log.warning("ttt-bench decodes greedily; do_sample=%s is ignored", kw.get("do_sample"))
            if max_new >= self.max_length:
                raise UserError(f"max_gen_toks={max_new} leaves no room for a context in max_length={self.max_length}")
            ids = self.tok_encode(context)[-(self.max_length - max_new) :] if context else []
            text = self._greedy(ids or [self.prefix_token_id], until, max_new)
            self.cache_hook.add_partial("generate_until", req.args, text)
            outs.append(text)
        return outs
