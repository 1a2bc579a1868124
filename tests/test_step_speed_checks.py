"""benchmarks/step_speed.py's verdict logic on synthetic rows and samples: intervals, met / MISSED /
inconclusive, cells void because the machine was throttled, --check / --strict, and --repeat's
plumbing and summary (no timing runs)."""

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
    return {(r["layout"], column): outcome for r, column, *_, outcome in S.target_outcomes(rows, S.TARGETS)}


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
    counts = S.check_targets(rows, S.TARGETS)
    assert counts == {"met": 2, "MISSED": 1, "inconclusive": 1, S.VOID: 0}
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
    assert S.summarize_runs(runs, strict=False, targets=S.TARGETS) == 0
    assert S.summarize_runs(runs, strict=True, targets=S.TARGETS) == 1  # run 1 was inconclusive
    out = capsys.readouterr().out
    assert ("target adam on layout a: ratio bfloat16 (>= 1.3): runs 1.27, 1.32, 1.35; median 1.32, "
            "min-max 1.27-1.35 of the 3 non-void; met in 2 of 3 (inconclusive 1, MISSED 0); void 0 of 3") in out
    runs.append([row("a", ratio_bfloat16=(1.2, 1.1, 1.25))])
    assert S.summarize_runs(runs, strict=False, targets=S.TARGETS) == 1


def test_repeat_runs_fresh_processes_and_reads_their_rows(tmp_path, monkeypatch, capsys):
    rows = {"best": 31.5, "cells": [{"algorithm": "adam", "times": [[0.01]]}]}
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
    monkeypatch.setattr(S, "rejudge", lambda runs: runs)  # the runs below are rows already (rejudge: below)

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


# --- cells measured while the machine was throttled (synthetic samples, seconds per call) ---

def triad_seconds(gbs):
    """The time of one triad call at ``gbs`` GB/s (what :class:`Triad` moves: 12 B x 32M)."""
    return 12 * S.Triad.n / (np.asarray(gbs, dtype=float) * 1e9)


def cell(torch_ms, optimlab_ms, triad_gbs, int8_ms=None, layout="a"):
    """A measured Adam cell (what ``measure_cell`` returns), from per-round samples."""
    times = [list(np.asarray(torch_ms) / 1e3), list(np.asarray(optimlab_ms) / 1e3)]
    low = []
    if int8_ms is not None:
        times.append(list(np.asarray(int8_ms) / 1e3))
        low = [("int8", 25.4)]
    return {"algorithm": "adam", "layout": layout, "label": f"{layout}: synthetic", "n": 16 << 20, "bytes_per": 28,
            "path": "fused", "times": times, "triad": list(triad_seconds(triad_gbs)), "first": 0.1, "rss": (0.0, 0.0),
            "low": low, "c_checks": False, "py_checks": False, "compiled": None}


RNG = np.random.default_rng(13)


def normal_cell(rounds=30, triad=32.0, spread=0.08, layout="a"):
    """The machine as usual, noisy: torch 15.5 ms, optimlab 14.3, int8 11.0 (ratio 1.41), triad
    around ``triad`` GB/s, each sample off by a lognormal factor of ``spread``."""
    noise = lambda: np.exp(RNG.normal(0, spread, rounds))  # noqa: E731
    return cell(15.5 * noise(), 14.3 * noise(), triad * noise(), int8_ms=11.0 * noise(), layout=layout)


def plateau_cell(rounds=30):
    """The phase seen on the machine: every side ~24 ms whatever its bytes, the triad ~16.5 GB/s."""
    noise = lambda: np.exp(RNG.permutation(np.linspace(-0.02, 0.02, rounds)))  # noqa: E731 (median 1)
    return cell(24.2 * noise(), 24.0 * noise(), 16.5 * noise(), int8_ms=24.0 * noise())


def test_a_throttled_cell_is_void_with_its_numbers_and_reason():
    line, row = S.report_cell(plateau_cell(), best_gbs=32.2)
    assert row["void"] == "throttled: triad 16.5 of 32.2 GB/s in 30 of 30 rounds"
    assert "<<< VOID, throttled: triad 16.5 of 32.2 GB/s in 30 of 30 rounds: its targets are void" in line
    assert row["ratio int8"] == pytest.approx(1.0, abs=0.03) and row["rounds"] == 30  # its numbers, shown
    assert " 24.0" in line  # int8 ms printed
    got = {column: outcome for _, column, *_, outcome in S.target_outcomes([row], S.TARGETS)}
    assert got == {"ratio int8": S.VOID, "state% int8": "met"}  # the counted bytes are no sample: decided


def test_a_noisy_but_fine_cell_is_not_flagged():
    # 200 noisy cells (10% per sample: the triad's rounds 23-44 GB/s) judged against a best 15%
    # above their own median: none void; a rare round in the tail may be dropped, never many
    for _ in range(200):
        c = normal_cell(spread=0.10)
        line, row = S.report_cell(c, best_gbs=1.15 * S.cell_bandwidth(c))
        assert row["void"] is None and row["rounds"] >= 28 and "VOID" not in line
    # a minute of lower bandwidth (22 of 34 GB/s) is the machine's swing, not the phase
    c = normal_cell(triad=22.0, spread=0.05)
    assert S.report_cell(c, best_gbs=34.0)[1]["void"] is None


def test_throttled_rounds_are_dropped_when_most_of_the_cell_stands():
    # the phase begins after round 20: the last 10 rounds are dropped, the first 20 give the ratio
    good, bad = normal_cell(rounds=20, spread=0.02), plateau_cell(rounds=10)
    mixed = {**good, "times": [g + b for g, b in zip(good["times"], bad["times"])],
             "triad": good["triad"] + bad["triad"]}
    line, row = S.report_cell(mixed, best_gbs=32.0)
    assert row["void"] is None and row["rounds"] == 20
    assert row["ratio int8"] == pytest.approx(S.report_cell(good, best_gbs=32.0)[1]["ratio int8"])
    assert row["ratio int8"] > 1.3
    assert "(10 of 30 rounds dropped: their triad ran below 0.6 of the run's best, 32.0 GB/s)" in line
    # more than half throttled: void, every round shown
    worse = {**good, "times": [g[:14] + b + b[:6] for g, b in zip(good["times"], bad["times"])],
             "triad": good["triad"][:14] + bad["triad"] + bad["triad"][:6]}
    assert S.report_cell(worse, best_gbs=32.0)[1]["void"] == "throttled: triad 16.5 of 32.0 GB/s in 16 of 30 rounds"


def test_void_targets_are_counted_apart_never_met_nor_missed(capsys):
    _, void_row = S.report_cell(plateau_cell(), best_gbs=32.2)
    _, fine_row = S.report_cell(normal_cell(spread=0.02), best_gbs=32.0)
    counts = S.check_targets([void_row, fine_row], S.TARGETS)
    assert counts == {"met": 2, "MISSED": 1, "inconclusive": 0, S.VOID: 1}  # fine: int8 1.41 MISSED, 25.4% met x2
    out = capsys.readouterr().out
    assert "ratio int8 1.01 [" in out and "(>= 1.6) void (machine throttled): throttled: triad 16.5 of 32.2" in out
    assert "1 target(s) void: measured while the machine was throttled, neither met nor MISSED" in out
    assert S.failures(counts, strict=False) == 1 and S.failures(counts, strict=True) == 2
    alone = S.check_targets([void_row], S.TARGETS)  # --check: void is no MISSED; --strict: it is not met either
    assert alone == {"met": 1, "MISSED": 0, "inconclusive": 0, S.VOID: 1}
    assert S.failures(alone, strict=False) == 0 and S.failures(alone, strict=True) == 1


def test_run_cells_remeasures_a_void_cell_once_at_the_end(capsys):
    measured = []
    queue = {"a": [plateau_cell(), normal_cell(spread=0.02)], "b": [normal_cell(spread=0.02, layout="b")]}

    def measure(spec, lk):
        measured.append(lk)
        return queue[lk].pop(0)

    specs = [(("adam",), "a"), (("adam",), "b")]
    rows = S.run_cells(specs, measure, best_gbs=32.0)[0]
    assert measured == ["a", "b", "a"]  # a again after b
    assert rows[0]["void"] is None and rows[0]["remeasured"] and rows[0]["ratio int8"] > 1.3
    out = capsys.readouterr().out
    assert "re-measuring once, at the end of the run, the 1 cell(s)" in out and out.count("(re-measured)") == 1
    # throttled again: void, said so; without retry: measured once
    queue["a"] = [plateau_cell(), plateau_cell()]
    queue["b"] = [normal_cell(spread=0.02, layout="b")]
    rows = S.run_cells(specs, measure, best_gbs=32.0)[0]
    assert rows[0]["void"].endswith("in 30 of 30 rounds, again when re-measured")
    queue["a"], queue["b"], measured[:] = [plateau_cell()], [normal_cell(spread=0.02, layout="b")], []
    rows = S.run_cells(specs, measure, best_gbs=32.0, retry=False)[0]
    assert measured == ["a", "b"] and rows[0]["void"] and "(re-measured)" not in capsys.readouterr().out[-300:]
    # the run's best so far is the reference: a start in the phase (16 GB/s) voids nothing
    queue["a"], queue["b"] = [plateau_cell()], [normal_cell(spread=0.02, layout="b")]
    assert S.run_cells(specs, measure, best_gbs=16.0)[0][0]["void"] is None


def test_summary_judges_only_the_non_void_runs(capsys):
    fine = lambda v: row("a", ratio_int8=(v, v - 0.05, v + 0.05))  # noqa: E731
    void = {**row("a", ratio_int8=(1.01, 1.0, 1.09)), "void": "throttled: triad 16.5 of 32.2 GB/s in 30 of 30 rounds"}
    runs = [[fine(1.70)], [void], [fine(1.68)]]
    assert S.summarize_runs(runs, strict=False, targets=S.TARGETS) == 0
    assert S.summarize_runs(runs, strict=True, targets=S.TARGETS) == 0
    out = capsys.readouterr().out
    assert ("target adam on layout a: ratio int8 (>= 1.6): runs 1.70, 1.01 (void), 1.68; median 1.69, "
            "min-max 1.68-1.70 of the 2 non-void; met in 2 of 2 (inconclusive 0, MISSED 0); void 1 of 3") in out
    runs = [[void], [void]]
    assert S.summarize_runs(runs, strict=False, targets=S.TARGETS) == 0  # no evidence is no MISSED
    assert S.summarize_runs(runs, strict=True, targets=S.TARGETS) == 1   # but it is not met either
    assert "runs 1.01 (void), 1.01 (void); no non-void run; met in 0 of 0" in capsys.readouterr().out
    runs = [[fine(1.70)], [void], [fine(1.40)]]
    assert S.summarize_runs(runs, strict=False, targets=S.TARGETS) == 1  # a non-void MISSED still fails --check


def test_repeat_judges_every_run_against_the_best_triad_of_all_runs(capsys):
    # run 1 throttled from start to end (its own best 16.9): nothing in it reads as throttled
    # against itself; run 2 saw the machine as it is (triad ~32): against it, run 1 is void
    runs = [{"best": 16.9, "cells": [plateau_cell()]}, {"best": 33.0, "cells": [normal_cell(spread=0.02)]}]
    assert S.report_cell(runs[0]["cells"][0], 16.9)[1]["void"] is None
    rows = S.rejudge(json.loads(json.dumps(runs)))  # as read back from the children
    assert rows[0][0]["void"] == "throttled: triad 16.5 of 33.0 GB/s in 30 of 30 rounds"
    assert rows[1][0]["void"] is None and rows[1][0]["ratio int8"] == pytest.approx(1.41, abs=0.03)
    assert "run 1: adam on layout a is void against the best triad of the 2 runs" in capsys.readouterr().out
    S.summarize_runs(rows, strict=False, targets=S.TARGETS)
    out = capsys.readouterr().out
    assert "ratio int8 (>= 1.6): runs 1.01 (void), 1.4" in out and "(inconclusive 0, MISSED 1); void 1 of 2" in out


def test_reference_triad_is_checked(monkeypatch, capsys):
    for bad in ("0", "-3", "inf", "nan"):
        monkeypatch.setattr(sys, "argv", ["step_speed.py", "--reference-triad", bad])
        with pytest.raises(SystemExit) as e:
            S.main()
        assert e.value.code == 2
        assert f"--reference-triad must be a bandwidth > 0 in GB/s, got {float(bad)}" in capsys.readouterr().err
