"""benchmarks/step_speed.py's verdict logic on synthetic rows: intervals, met / MISSED /
inconclusive, --check / --strict, and --repeat's plumbing and summary (no timing runs)."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import step_speed as S  # noqa: E402


def row(layout="a", columns=None, **kw):
    """An Adam row: ``columns`` maps a column to a value (counted) or to ``(value, low, high)``;
    keyword ``ratio_int8=...`` stands for column "ratio int8"."""
    out = {"algorithm": "adam", "layout": layout, "ci": {}}
    for key, v in {**(columns or {}), **{k.replace("_", " "): v for k, v in kw.items()}}.items():
        if isinstance(v, tuple):
            out[key], out["ci"][key] = v[0], v[1:]
        else:
            out[key] = v
    return out


def outcomes(rows):
    return {(r["layout"], column): outcome for r, column, *_, outcome in S.target_outcomes(rows)}


def test_outcome_reads_the_interval_not_the_point():
    rows = [row("a", {"state% int8": 25.5}, ratio_bfloat16=(1.32, 1.31, 1.36), ratio_int8=(1.62, 1.55, 1.70)),
            row("b", {"state% int8": 27.5}, ratio_bfloat16=(1.27, 1.22, 1.29), ratio_int8=(1.58, 1.60, 1.70))]
    got = outcomes(rows)
    assert got == {("a", "ratio bfloat16"): "met",            # whole interval above 1.3
                   ("a", "ratio int8"): "inconclusive",       # point above 1.6, interval straddles it
                   ("a", "state% int8"): "met",               # counted (exact) and below 27
                   ("b", "ratio bfloat16"): "MISSED",         # whole interval below 1.3
                   ("b", "ratio int8"): "inconclusive",       # touches the bound
                   ("b", "state% int8"): "MISSED"}            # counted, above 27


def test_check_targets_counts_and_failures(capsys):
    rows = [row("a", ratio_bfloat16=(1.32, 1.31, 1.36), ratio_int8=(1.5, 1.45, 1.55)),
            row("e", ratio=(6.0, 4.8, 7.0)), row("c", {"%bw": (75.0, 72.0, 78.0)})]
    rows[2]["algorithm"] = "rmsprop"  # "*" on layout c
    counts = S.check_targets(rows)
    assert counts == {"met": 2, "MISSED": 1, "inconclusive": 1}
    assert S.failures(counts, strict=False) == 1 and S.failures(counts, strict=True) == 2
    out = capsys.readouterr().out
    assert "target adam on layout a: ratio bfloat16 1.32 [1.31,1.36] (>= 1.3) met" in out
    assert "ratio int8 1.50 [1.45,1.55] (>= 1.6) MISSED" in out
    assert "target adam on layout e: ratio 6.00 [4.80,7.00] (>= 5) inconclusive" in out
    assert "target rmsprop on layout c: %bw 75.00 [72.00,78.00] (>= 70) met" in out
    assert S.failures({"met": 3, "MISSED": 0, "inconclusive": 2}, strict=False) == 0


def test_ratio_ci_scales_the_helper_and_text():
    b = np.linspace(1.0, 2.0, 30)
    assert S.ratio_ci(list(3 * b), list(b), scale=100) == pytest.approx((300.0, 300.0, 300.0))
    assert S.ci_text((1.2749, 1.2201, 1.333)) == "1.27 [1.22,1.33]"
    assert S.ci_text((75.4, 71.6, 78.2), percent=True) == "75% [72,78]"


def test_summarize_runs_counts_each_runs_own_outcome(capsys):
    runs = [[row("a", ratio_bfloat16=(1.27, 1.22, 1.31))], [row("a", ratio_bfloat16=(1.32, 1.31, 1.35))],
            [row("a", ratio_bfloat16=(1.35, 1.32, 1.40))]]
    assert S.summarize_runs(runs, strict=False) == 0
    assert S.summarize_runs(runs, strict=True) == 1  # run 1 was inconclusive
    out = capsys.readouterr().out
    assert ("target adam on layout a: ratio bfloat16 (>= 1.3): runs 1.27, 1.32, 1.35; median 1.32, "
            "min-max 1.27-1.35; met in 2 of 3 (inconclusive 1, MISSED 0)") in out
    runs.append([row("a", ratio_bfloat16=(1.2, 1.1, 1.25))])
    assert S.summarize_runs(runs, strict=False) == 1


def test_repeat_runs_fresh_processes_and_reads_their_rows(tmp_path, monkeypatch, capsys):
    rows = [row("a", ratio=(1.1, 1.0, 1.2))]
    child = tmp_path / "child.py"
    child.write_text("import sys\nprint('table line', sys.argv[1:])\n"
                     f"print({S.ROWS_TAG + json.dumps(rows)!r})\n")
    monkeypatch.setattr(S, "__file__", str(child))
    runs = S.repeat(2, ["--layouts", "a"])
    assert runs == [json.loads(json.dumps(rows))] * 2
    out = capsys.readouterr().out
    assert out.count("table line ['--layouts', 'a', '--rows-json']") == 2 and S.ROWS_TAG not in out
    assert "=== run 2 of 2" in out
    child.write_text("print('no rows')\n")
    with pytest.raises(SystemExit, match="run 1 of 1 failed"):
        S.repeat(1, [])


def test_main_repeat_exit_status(monkeypatch):
    missed = [[row("a", ratio_int8=(1.5, 1.45, 1.55))]]
    unsure = [[row("a", ratio_int8=(1.6, 1.55, 1.65))]]
    seen = []

    def fake(runs):
        return lambda n, argv: seen.append((n, argv)) or runs

    for runs, flags, code in ((missed, ["--check"], 1), (missed, [], None), (unsure, ["--check"], None),
                              (unsure, ["--strict"], 1)):
        monkeypatch.setattr(S, "repeat", fake(runs))
        monkeypatch.setattr(sys, "argv", ["step_speed.py", "--repeat", "3", *flags])
        if code is None:
            S.main()
        else:
            with pytest.raises(SystemExit) as e:
                S.main()
            assert e.value.code == code
    assert seen[0] == (3, ["--repeat", "3", "--check"])
    monkeypatch.setattr(sys, "argv", ["step_speed.py", "--repeat", "0"])
    with pytest.raises(SystemExit) as e:
        S.main()
    assert e.value.code == 2
