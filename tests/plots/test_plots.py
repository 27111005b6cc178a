"""Figures draw from small synthetic tables; gaps are noted, not fatal; claims flip with the numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from plots_synth import full_table, latency_table, ppl_table, row

from plots.__main__ import main
from plots.claims import decode_growth, prefill_faster_than_transformer, prefill_matches_mamba
from plots.figures import FIGURES, draw_all
from plots.reference import REFERENCE_PATH, load_reference
from plots.rows import load_results, normalize


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return normalize(full_table())


@pytest.mark.parametrize("fn", FIGURES, ids=lambda f: f.__name__)
def test_each_figure_writes_png_and_svg(fn, rows, tmp_path):
    res = fn(rows, tmp_path, load_reference())
    assert res.drawn, res.skipped
    for p in res.paths:
        assert p.exists() and p.stat().st_size > 1000
    assert res.table is not None and not res.table.empty


def test_empty_results_skip_every_figure(tmp_path):
    results = draw_all(load_results(tmp_path / "none"), tmp_path / "out", load_reference())
    assert all(not r.drawn and r.skipped for r in results)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_missing_model_and_all_oom_are_gaps(tmp_path):
    t = latency_table(oom_32k=())
    t = t[t["model"] != "mamba"]  # a model with no rows at all
    t.loc[t["model"] == "ttt_mlp", ["status", "value"]] = ["oom", None]  # a model that OOMs everywhere
    err = row(model="transformer", impl="flash_attn", mode="prefill", ctx=4096, metric="ms_per_token",
              status="error", error="boom", run_id="run-x")  # fmt: skip
    res = FIGURES[0](normalize(pd.concat([t, pd.DataFrame([err])])), tmp_path, None)
    assert res.drawn
    text = " ".join(res.notes)
    assert "ttt_mlp/dual: no successful point" in text
    assert "OOM" in text
    assert "error rows skipped" in text and "transformer/flash_attn@4k" in text


def _set_prefill(t: pd.DataFrame, model: str, ctx: int, value: float) -> pd.DataFrame:
    t = t.copy()
    sel = (t["model"] == model) & (t["ctx"] == ctx) & (t["mode"] == "prefill")
    t.loc[sel, "value"] = value
    return t


def test_prefill_claim_flips_with_numbers():
    t = latency_table()
    t = _set_prefill(_set_prefill(t, "transformer", 8192, 0.030), "ttt_linear", 8192, 0.020)
    (yes,) = prefill_faster_than_transformer(normalize(t))
    assert yes.verdict == "yes" and "ratio 1.50" in yes.detail and "NVIDIA H100" in yes.text
    assert "run-0" in yes.provenance and "2 run(s)" in yes.provenance
    t = _set_prefill(t, "ttt_linear", 8192, 0.040)
    (no,) = prefill_faster_than_transformer(normalize(t))
    assert no.verdict == "no" and "ratio 0.75" in no.detail


def test_mamba_match_and_not_measured():
    t = latency_table()
    assert prefill_matches_mamba(normalize(t))[0].verdict == "yes"
    assert prefill_matches_mamba(normalize(_set_prefill(t, "ttt_linear", 2048, 1.0)))[0].verdict == "no"
    (c,) = prefill_faster_than_transformer(normalize(t[t["model"] != "transformer"]))
    assert c.verdict == "not measured"


def test_decode_claim_flips():
    t = latency_table(oom_32k=())
    assert decode_growth(normalize(t))[0].verdict == "yes"
    flat = t.copy()
    flat.loc[(flat["model"] == "transformer") & (flat["mode"] == "decode"), "value"] = 9.0
    assert decode_growth(normalize(flat))[0].verdict == "no"


def test_reference_is_sourced_and_never_merged(tmp_path, rows):
    ref = load_reference()
    assert set(ref["source"]) <= {"table", "read-off"}
    t1 = ref[ref["figure"] == "Table 1"].set_index("variant")["value"]
    assert t1["linear_attention"] == 15.91 and t1["mamba_backbone"] == 11.09
    # A results dir that also holds a copy of the reference file: plotting must not pick its values up as rows.
    (tmp_path / "res").mkdir()
    full_table().to_csv(tmp_path / "res" / "a.csv", index=False)
    loaded = load_results(tmp_path / "res")
    assert "source" not in loaded.columns and not (loaded["value"] == 15.91).any()
    res = FIGURES[6](loaded, tmp_path / "out", ref)  # ablation: measured bars + paper overlay
    assert res.table is not None
    assert (
        res.table.loc["Linear attention", "measured"] == "17" and res.table.loc["Linear attention", "paper"] == "15.91"
    )
    assert res.table.loc["+ learnable W0", "measured"] == "—"
    assert REFERENCE_PATH.name == "paper_reference.csv"


def test_main_writes_report_and_claims_flip(tmp_path):
    res_dir = tmp_path / "results"
    (res_dir / "nested").mkdir(parents=True)
    t = _set_prefill(_set_prefill(latency_table(), "transformer", 8192, 0.030), "ttt_linear", 8192, 0.020)
    t.to_csv(res_dir / "lat.csv", index=False)
    ppl_table().to_csv(res_dir / "nested" / "ppl.csv", index=False)
    assert main(["--results", str(res_dir), "--out", str(tmp_path / "out")]) == 0
    report = (res_dir / "REPORT.md").read_text()
    assert "| TTT-Linear prefill faster than the Transformer at 8k on NVIDIA H100 80GB HBM3 | **yes** |" in report
    assert "_Skipped: no rows with mode=op" in report
    assert "| 32k |" in report and "OOM" in report
    assert (tmp_path / "out" / "prefill_latency.png").stat().st_size > 1000
    _set_prefill(t, "ttt_linear", 8192, 0.060).to_csv(res_dir / "lat.csv", index=False)
    main(["--results", str(res_dir), "--out", str(tmp_path / "out")])
    assert "at 8k on NVIDIA H100 80GB HBM3 | **no** |" in (res_dir / "REPORT.md").read_text()


def test_duplicate_files_count_once(tmp_path):
    t = latency_table()
    for name in ("a.csv", "baselines/a.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        t.to_csv(tmp_path / name, index=False)
    assert len(load_results(Path(tmp_path))) == len(t)


def test_ppl_claim_per_evaluation_set_and_needs_a_real_gap():
    """Two corpora are two claims, never pooled; TTT must gain more than Mamba, not share a drift with it."""
    from plots.claims import ppl_long_context
    from plots.rows import normalize

    def rows(checksum: str, ttt: tuple[float, float], mamba: tuple[float, float]) -> list[dict]:
        out = []
        for model, (p16, p32) in (("ttt_linear", ttt), ("mamba", mamba)):
            for ctx, v in ((16384, p16), (32768, p32)):
                out.append(row(model=model, impl=f"{model}/x", mode="ppl", metric="ppl", ctx=ctx, value=v,
                               corpus="stdlib", corpus_checksum=checksum, train_ctx=32768))  # fmt: skip
        return out

    df = normalize(pd.DataFrame(rows("aaa", (10.0, 9.5), (10.0, 10.0)) + rows("bbb", (10.0, 9.99), (10.0, 9.98))))
    claims = {c.text.split("(")[-1]: c for c in ppl_long_context(df)}
    assert len(claims) == 2
    assert claims["stdlib aaa, trained at 32k)"].verdict == "yes"
    assert claims["stdlib bbb, trained at 32k)"].verdict == "no"  # Mamba gained as much: no trend


def test_ppl_claim_splits_tokenizers_like_the_figure():
    """The claim's evaluation set is the figure's (plots.ppl.EVAL_SET): one text under two tokenizers is two claims."""
    from plots.claims import ppl_long_context
    from plots.rows import normalize

    out = []
    for tok, ttt32 in (("byte", 9.5), ("bpe", 10.2)):
        for model, (p16, p32) in (("ttt_linear", (10.0, ttt32)), ("mamba", (10.0, 10.0))):
            for ctx, v in ((16384, p16), (32768, p32)):
                out.append(row(model=model, impl=f"{model}/x", mode="ppl", metric="ppl", ctx=ctx, value=v,
                               corpus="stdlib", corpus_checksum="aaa", tokenizer=tok, train_ctx=32768))  # fmt: skip
    claims = {c.text.split("(")[-1]: c for c in ppl_long_context(normalize(pd.DataFrame(out)))}
    assert sorted(claims) == ["stdlib aaa bpe, trained at 32k)", "stdlib aaa byte, trained at 32k)"]
    assert claims["stdlib aaa byte, trained at 32k)"].verdict == "yes"
    assert claims["stdlib aaa bpe, trained at 32k)"].verdict == "no"


def test_op_figure_has_panels_per_gpu(tmp_path):
    from plots.op import draw_op
    from plots.rows import normalize

    rows = [
        row(model="ttt_linear", impl=f"ttt_linear/{impl}", mode="op", metric="time", unit="ms", ctx=t, batch=16,
            value=v * t / 1024, shape_set="b", gpu_name=gpu)
        for gpu, v in (("GPU-A", 1.0), ("GPU-B", 0.5)) for impl in ("triton", "dual") for t in (1024, 2048)
    ]  # fmt: skip
    res = draw_op(normalize(pd.DataFrame(rows)), tmp_path)
    cols = list(res.table.columns)
    assert any("GPU-A" in c for c in cols) and any("GPU-B" in c for c in cols)
    a = res.table[[c for c in cols if "GPU-A" in c and c.endswith("ttt_linear/triton")][0]]
    assert list(a) == ["1", "2"]  # GPU-A's own values, not a median over both GPUs
