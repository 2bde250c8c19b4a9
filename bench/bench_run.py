"""The whole default run: `impactstudy run` on the bundled study, as a user runs it.

    .venv/bin/python bench/bench_run.py [--repeat 3] [--no-stages] [--baseline OTHER/impactstudy]

1. A probe of the machine's speed (a pure-Python loop, a one-thread NumPy product), so that runs
   on machines of different speed can be compared: the same kind of machine has been seen to
   differ by a factor of three from one day to the next.
2. `impactstudy run --jobs 1` (one process) and `--jobs 2` (with a helper process, the default on
   two cores), each in a fresh process and a fresh output folder, alternating, ``repeat`` times;
   wall-clock seconds (median and best), and every output file compared byte for byte between
   all runs.
3. Where the time goes: each stage of the one-process run timed in this process, one after
   another (simulate split into populations, truth and fieldwork).

Results go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

EXE = Path(sys.executable).parent / "impactstudy"


def probe() -> tuple[float, float]:
    """Seconds for 10 million Python integer additions, and for a 2000 x 2000 matrix product
    on one BLAS thread."""
    from threadpoolctl import threadpool_limits

    t = time.perf_counter()
    s = 0
    for i in range(10_000_000):
        s += i
    py = time.perf_counter() - t
    a = np.random.default_rng(0).random((2000, 2000))
    with threadpool_limits(limits=1, user_api="blas"):
        t = time.perf_counter()
        a @ a
        blas = time.perf_counter() - t
    return py, blas


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def whole_runs(repeat: int, baseline: str | None) -> dict[str, list[float]]:
    commands = {
        "`impactstudy run --jobs 1`": [str(EXE), "run", "--jobs", "1"],
        "`impactstudy run --jobs 2`": [str(EXE), "run", "--jobs", "2"],
    }
    if baseline:
        commands[f"baseline: `{baseline} run`"] = [baseline, "run"]
    times: dict[str, list[float]] = {name: [] for name in commands}
    reference: dict[str, bytes] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeat):
            for i, (name, command) in enumerate(commands.items()):
                out = Path(tmp) / f"{i}-{r}"
                t = time.perf_counter()
                subprocess.run(
                    [*command, "--out", str(out)],
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                times[name].append(time.perf_counter() - t)
                print(f"  {name}: {times[name][-1]:6.2f} s", flush=True)
                if name.startswith("baseline"):
                    continue
                got = files(out)
                if reference is None:
                    reference = got
                differ = sorted(
                    k for k in reference.keys() | got.keys() if reference.get(k) != got.get(k)
                )
                if differ:
                    raise SystemExit(f"outputs differ from the first run's: {differ}")
    return times


def stages() -> list[tuple[str, float]]:
    """The one-process run's stages, in its order (as `impactstudy.cli.run` calls them)."""
    from threadpoolctl import threadpool_limits

    timed: list[tuple[str, float]] = []

    def lap(name: str, f: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        result = f()
        timed.append((name, time.perf_counter() - t))
        return result

    t0 = time.perf_counter()
    from impactstudy.cli import _outputs_audit
    from impactstudy.estimate import estimate_all
    from impactstudy.impact import io_draws, run_presets
    from impactstudy.quality import screen
    from impactstudy.report import ReportInputs, html_page, report_context, write_pdf
    from impactstudy.report.xlsx import write_xlsx
    from impactstudy.simulate.population import build_population
    from impactstudy.simulate.simulation import Simulation, _fieldwork
    from impactstudy.simulate.truth import truth
    from impactstudy.study import bundled_study, load
    from impactstudy.weighting import weight

    timed.append(("import", time.perf_counter() - t0))
    with threadpool_limits(limits=1, user_api="blas"), tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        s = lap("load the study", lambda: load(bundled_study()))
        assert s.simulation is not None
        seed = s.simulation.simulation.seed
        pops = {}
        for g in s.groups:
            pops[g] = lap(f"population: {g}", lambda g=g: build_population(s, g, seed))
        true = lap("truth", lambda: truth(s, pops))
        fw = lap("fieldwork (quotas closed on valid responses)", lambda: _fieldwork(s, pops, seed))
        sim = Simulation(seed, pops, true, fw)
        lap("write the simulation", lambda: sim.write(s, out / "simulation"))
        valid = lap("screen", lambda: screen(sim.responses, s))
        lap("write the valid sample", lambda: valid.write(out / "valid_sample"))
        weighted = lap("weight", lambda: weight(valid, s, seed=seed))
        lap("write the weights", lambda: weighted.write(out / "weights"))
        est = lap("estimate", lambda: estimate_all(weighted, s, by=[s.config.sample.stratify_by]))
        lap("write the estimates", lambda: est.write(out / "estimates"))
        io = lap("model: input-output draws", lambda: io_draws(s))
        runs = lap("model: the rest (both presets)", lambda: run_presets(s, est, io=io))
        lap("write the model runs", lambda: [r.write(out / "model" / p) for p, r in runs.items()])
        findings = lap("audit of our outputs", lambda: _outputs_audit(runs, s))
        inputs = ReportInputs(s, valid, weighted, est, runs, findings, sim.truth, seed)
        context = lap("report: content and charts", lambda: report_context(inputs, "zh"))
        lap("report: HTML", lambda: html_page(context))
        lap("report: XLSX", lambda: write_xlsx(inputs, out / "estimates.xlsx"))
        lap("report: PDF", lambda: write_pdf(context, out / "report.pdf"))
    return timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-stages", action="store_true")
    ap.add_argument(
        "--baseline",
        default=None,
        help="another installation's impactstudy command (e.g. an earlier commit's), timed in "
        "the same alternation; its outputs are not compared",
    )
    args = ap.parse_args()
    py, blas = probe()
    print(f"machine probe: Python loop {py:.2f} s, NumPy 2000x2000 product (1 thread) {blas:.2f} s")
    times = whole_runs(args.repeat, args.baseline)
    print("\n| command | median, s | best, s |\n| --- | ---: | ---: |")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.1f} | {min(ts):.1f} |")
    print("every run's outputs (but the baseline's) identical, byte for byte")
    if not args.no_stages:
        print("\n| stage (one process) | seconds |\n| --- | ---: |")
        total = 0.0
        for name, sec in stages():
            total += sec
            print(f"| {name} | {sec:.2f} |")
        print(f"| **total** | **{total:.1f}** |")
    py2, blas2 = probe()
    print(f"\nmachine probe again: Python loop {py2:.2f} s, NumPy product {blas2:.2f} s")


if __name__ == "__main__":
    main()
