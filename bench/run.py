"""The Hydra entry point: one composed config -> measured points -> rows appended to a results CSV.

    python -m bench.run model=ttt_linear ctx=8192                  # prefill + decode, one point
    python -m bench.run +sweep=latency                             # all models x contexts x modes, one process
    python -m bench.run --multirun model=ttt_linear,mamba ctx=1024,2048
    python -m bench.run +sweep=op                                  # op-level job (bench/op.py)

Bad requests end with one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import importlib
import itertools
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from bench import hw, latency, registry, results
from bench.cli import explicit_keys, guarded, main_with_groups
from bench.plan import DTYPES, Plan, describe, make_plan
from ttt.errors import UserError
from ttt.ops.common import KERNEL_LAUNCHES

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("model", "size", "bench", "hardware", "sweep")


def _point_id(plan: Plan, prov: dict[str, Any], model: str, mode: str, ctx: int) -> dict[str, Any]:
    return {
        "model": model,
        "impl": f"{model}/{plan.impls[model]}",
        "size": plan.size,
        "mode": mode,
        "ctx": ctx,
        "batch": plan.batch,
        "dtype": plan.dtype,
        "device": prov["device"],
        "gpu_name": prov["gpu_name"],
        "git_commit": prov["git_commit"],
    }


def _check(plan: Plan, net: torch.nn.Module, model: str) -> tuple[float | None, str]:
    """(relative error, error text) of the fast impl against its reference; ('', None) when it is the reference."""
    ref = registry.reference_impl(model, plan.impls[model])
    if not plan.check or ref is None:
        return None, ""
    vocab = int(registry.size_config(plan.size).vocab_size)
    try:
        err = latency.check_against_reference(
            net, ref, vocab=vocab, batch=min(plan.check_batch, plan.batch), tokens=plan.check_tokens
        )
    except Exception as e:  # the check itself broke (OOM included): nothing of this impl is timed
        latency.free_memory()
        return None, f"check against {model}/{ref} failed: {type(e).__name__}: {e}"
    if not err <= plan.check_tol:  # NaN fails too
        return (
            err,
            f"{model}/{plan.impls[model]} differs from {model}/{ref}: rel err {err:.3g} > tol {plan.check_tol:g}",
        )
    return err, ""


def _measure(plan: Plan, net: torch.nn.Module, mode: str, ctx: int) -> list[dict[str, Any]]:
    vocab = int(registry.size_config(plan.size).vocab_size)
    if mode == "prefill":
        return latency.guarded(
            mode,
            lambda: latency.measure_prefill(
                net, batch=plan.batch, ctx=ctx, vocab=vocab, timing=plan.timing, via=plan.prefill_via
            ),
        )
    return latency.guarded(
        mode,
        lambda: latency.measure_decode(
            net, batch=plan.batch, ctx=ctx, vocab=vocab, timing=plan.timing, graphs=plan.decode_graphs
        ),
    )


def run_latency(plan: Plan, prov: dict[str, Any], cfg_hashes: dict[str, str]) -> int:
    """Every (model, ctx, mode) not already in the results file; each model is built once for all its points."""
    done = set() if plan.force else results.done_keys(plan.results)
    todo = {
        model: [
            (ctx, mode)
            for ctx in plan.ctxs
            for mode in plan.modes
            if results.key_of(_point_id(plan, prov, model, mode, ctx)) not in done
        ]
        for model in plan.models
    }
    total = sum(map(len, todo.values()))
    skipped = len(plan.models) * len(plan.ctxs) * len(plan.modes) - total
    if skipped:
        print(f"resume: {skipped} point(s) already in {plan.results} (force=true measures them again)", file=sys.stderr)
    written, start = 0, time.monotonic()
    bar = tqdm(total=total, disable=not plan.progress or total == 0, unit="point", file=sys.stderr)
    for model, points in todo.items():
        if not points:
            continue

        def write(rows: Iterable[dict[str, Any]], ctx: int, mode: str, **extra: Any) -> None:
            nonlocal written
            base = dict(_point_id(plan, prov, model, mode, ctx), **extra)  # noqa: B023 - used within this loop turn
            written += results.append(
                plan.results,
                [results.complete(dict(base, **r), prov, cfg_hashes[model]) for r in rows],  # noqa: B023
            )
            bar.update(1)

        bar.set_description(model)
        net, build_error = None, ""
        try:
            net = registry.build(
                model,
                plan.size,
                plan.impls[model],
                device=plan.device,
                dtype=DTYPES[plan.dtype],
                overrides=plan.model_overrides.get(model),
            )
        except torch.OutOfMemoryError as e:
            build_error = f"oom: {str(e).splitlines()[0] if str(e) else 'out of memory'}"
        except UserError:
            raise
        except Exception as e:  # one model that cannot be built must not stop the others
            build_error = f"build failed: {type(e).__name__}: {e}"
        if net is None:
            latency.free_memory()
            status = "oom" if build_error.startswith("oom") else "error"
            for ctx, mode in points:
                write(latency.failure_rows(mode, status, build_error), ctx, mode)
            continue
        n_params = registry.count_params(net)
        impl = f"{model}/{net.impl}"
        decode_impl = getattr(net, "decode_impl", None)
        check_err, check_error = _check(plan, net, model)
        for ctx, mode in points:
            if plan.time_limit_s and time.monotonic() - start > plan.time_limit_s:
                # Stop between points, so a device command with a wall-clock limit ends cleanly; a rerun resumes.
                print(f"time_limit_s={plan.time_limit_s:g} reached: stopping; run again to resume", file=sys.stderr)
                bar.close()
                return written
            bar.set_postfix_str(f"{mode} ctx={ctx}")
            extra = {"impl": impl, "n_params": n_params, "check_rel_err": check_err}
            if mode == "decode":
                extra["decode_impl"] = f"{model}/{decode_impl}" if decode_impl else None
                extra["decode_graph"] = plan.decode_graphs and plan.device.type == "cuda"
            KERNEL_LAUNCHES.clear()
            if check_error:
                rows = latency.failure_rows(mode, "error", check_error)
            else:
                rows = _measure(plan, net, mode, ctx)
            extra["op_kernels"] = ",".join(sorted(KERNEL_LAUNCHES)) or None  # what the timed code launched
            write(rows, ctx, mode, **extra)
        del net
        latency.free_memory()
    bar.close()
    return written


def run_op(plan: Plan, cfg: DictConfig, prov: dict[str, Any], cfg_hash: str) -> int:
    """Dispatch to bench/op.py's `measure(cfg)`, which yields partial rows; each is appended as it comes."""
    try:
        op = importlib.import_module("bench.op")
    except ModuleNotFoundError as e:
        if e.name != "bench.op":
            raise
        raise UserError(
            "mode=op needs bench/op.py (its measure(cfg) yields the op rows), which is not there yet"
        ) from None
    written = 0
    bw = prov.get("hw_copy_gbps")
    # bench/op.py takes the flat options of conf/bench/op.yaml, plus this run's measured copy bandwidth.
    options = {k: v for k, v in OmegaConf.to_container(cfg.bench, resolve=True).items() if k != "name"}
    options.setdefault("copy_bw", bw * 1e9 if bw else None)
    prefill_rows = op.measure({**options, "impls": options.get("impls")})
    decode_rows = op.measure_decode({**options, "impls": options.get("decode_impls")}) if options.get("decode") else []
    for partial in itertools.chain(prefill_rows, decode_rows):
        row = dict(partial)
        # Fraction of this machine's measured copy bandwidth, where the op row says how many bytes it moved.
        if (
            row.get("frac_hbm") is None
            and row.get("bytes_moved")
            and bw
            and row.get("unit") == "ms"
            and row.get("value")
        ):
            row["frac_hbm"] = row["bytes_moved"] / (row["value"] * 1e-3) / (bw * 1e9)
        row.setdefault("device", prov["device"])
        written += results.append(plan.results, [results.complete(row, prov, cfg_hash)])
    return written


def execute(cfg: DictConfig, explicit: set[str]) -> int:
    """Run what `cfg` asks for; returns the number of rows written. Raises UserError for bad requests."""
    plan = make_plan(cfg, explicit)
    print(describe(plan), file=sys.stderr)
    prov = results.provenance(plan.device, hw.measure(plan.device))
    common = {"bench": OmegaConf.to_container(cfg.bench, resolve=True), "decode_graphs": plan.decode_graphs}
    if plan.modes == ["op"]:
        return run_op(plan, cfg, prov, results.config_hash(common))
    hashes = {m: results.config_hash(dict(common, model=plan.model_overrides[m])) for m in plan.models}
    return run_latency(plan, prov, hashes)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    def go() -> None:
        print(f"{execute(cfg, explicit_keys())} row(s) written", file=sys.stderr)

    guarded(go)


def cli() -> None:
    main_with_groups(main, GROUPS)


if __name__ == "__main__":
    cli()
