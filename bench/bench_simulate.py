"""Speed and memory of the simulator and the quality stage, stage by stage.

Two runs, each in a fresh child process so that its peak resident set size is its own:

default  the bundled study (studies/wechat-2018) with its default seed: `simulate(study)` split
         into its stages (the seven populations, the truth, the fieldwork, closing the quotas
         on valid responses), then `screen(responses, study)`. 11,576 valid responses.
scale    a copy of the bundled study, in a temporary folder, whose user group yields 1,000,000
         valid responses: the user population is 2,500,000 synthetic units (400,000 in the
         bundled study), the user quota 1,000,000 (5,000) and the users' response rates 0.6 on
         the web and 0.7 on the phone (0.06 and 0.15), so that every province has enough
         respondents (docs/benchmarks.md says why). The other six groups are as bundled.

The stages are the calls `simulate()` makes, in its order (with its retry, fieldwork again with
a larger invitation buffer, should screening leave a quota short), so they add up to
`simulate(study)`.
Peak RSS is the child process's high-water mark (`resource.getrusage`) after each stage, so it
only grows down the table. Prints a markdown table and whether the targets of issue 3 are met.

Run: .venv/bin/python bench/bench_simulate.py            (both, about two minutes)
     .venv/bin/python bench/bench_simulate.py --only default
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

SCALE_USERS = 1_000_000  # valid user responses
SCALE_SIZE = 2_500_000  # synthetic users
SCALE_RATES = "{ web = 0.6, phone = 0.7 }"
#: issue 3: default simulate + screen <= 10 s; at scale simulate <= 60 s, screen <= 20 s
TARGETS = {"default": (10.0, None), "scale": (60.0, 20.0)}


@dataclass
class Result:
    which: str
    #: (stage, wall seconds, peak RSS in MB after it)
    stages: list[tuple[str, float, float]] = field(default_factory=list)
    simulate_s: float = 0.0
    screen_s: float = 0.0
    user_population: int = 0
    submissions_raw: int = 0
    submissions: int = 0
    user_submissions: int = 0
    user_valid: int = 0
    valid: int = 0
    indicators: int = 0
    polars_threads: int = 0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _sub(pattern: str, repl: str, text: str, where: str) -> str:
    out, n = re.subn(pattern, repl, text, count=1, flags=re.MULTILINE)
    if n != 1:
        raise SystemExit(f"{where}: cannot find {pattern!r} to edit")
    return out


def scaled_study(root: Path) -> Path:
    """A copy of the bundled study whose user group yields SCALE_USERS valid responses."""
    from impactstudy.study import bundled_study

    folder = root / "wechat-2018-1m"
    shutil.copytree(bundled_study(), folder)
    sim = folder / "simulation.toml"
    text = sim.read_text(encoding="utf-8")
    text = _sub(r"(^\[groups\.user\]\nsize = )\d+", rf"\g<1>{SCALE_SIZE}", text, sim.name)
    text = _sub(
        r"(^\[groups\.user\]\n[^\[]*?response = \{ rate = )\{[^}]*\}",
        rf"\g<1>{SCALE_RATES}",
        text,
        sim.name,
    )
    sim.write_text(text, encoding="utf-8")
    cfg = folder / "study.toml"
    text = cfg.read_text(encoding="utf-8")
    user = re.search(r"^\[groups\.user\]\n[^\[]*?target_valid = (\d+)", text, re.MULTILINE)
    total = re.search(r"^\[sample\]\ntarget_valid = (\d+)", text, re.MULTILINE)
    if user is None or total is None:
        raise SystemExit(f"{cfg.name}: cannot find the user and total targets")
    others = int(total.group(1)) - int(user.group(1))
    text = _sub(
        r"(^\[groups\.user\]\n[^\[]*?target_valid = )\d+", rf"\g<1>{SCALE_USERS}", text, cfg.name
    )
    text = _sub(
        r"(^\[sample\]\ntarget_valid = )\d+", rf"\g<1>{SCALE_USERS + others}", text, cfg.name
    )
    cfg.write_text(text, encoding="utf-8")
    return folder


def run(which: str) -> Result:
    """Time every stage of simulate() and screen() on one study (in this process)."""
    import polars as pl

    from impactstudy.quality import screen
    from impactstudy.simulate import Population, build_population, run_fieldwork, truth
    from impactstudy.simulate.fieldwork import QuotaShortError, close_quotas
    from impactstudy.simulate.simulation import BUFFERS
    from impactstudy.study import Study, bundled_study, load

    result = Result(which)

    def timed(name: str, fn: Callable[[], T]) -> T:
        """Run a stage; a stage run again (a retried fieldwork) adds to its time."""
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            seconds = time.perf_counter() - t0
            again = [i for i, stage in enumerate(result.stages) if stage[0] == name]
            if again:
                seconds += result.stages.pop(again[0])[1]
            result.stages.append((name, seconds, _peak_mb()))

    with tempfile.TemporaryDirectory() as tmp:
        folder = bundled_study() if which == "default" else scaled_study(Path(tmp))
        study: Study = timed("load the study", lambda: load(folder))
    seed = study.simulation.simulation.seed if study.simulation else 0

    def population(group: str) -> Callable[[], Population]:
        return lambda: build_population(study, group, seed)

    # what simulate(study, seed) does, stage by stage
    t0 = time.perf_counter()
    populations = {g: timed(f"population: {g}", population(g)) for g in study.groups}
    true_values = timed("truth", lambda: truth(study, populations))
    for buffer in BUFFERS:  # as simulate() does: invite more if screening leaves a quota short
        collected = timed("fieldwork", partial(run_fieldwork, study, populations, seed, buffer))
        try:
            fieldwork = timed(
                "close quotas (screens until settled)", partial(close_quotas, study, collected)
            )
            break
        except QuotaShortError:
            if buffer == BUFFERS[-1]:
                raise
    result.simulate_s = time.perf_counter() - t0
    valid = timed("screen", lambda: screen(fieldwork.responses, study))
    result.screen_s = result.stages[-1][1]
    users = valid.groups["user"].submissions
    result.user_population = populations["user"].frame.height
    result.submissions_raw = sum(g.submissions.height for g in collected.responses)
    result.submissions = sum(g.submissions.height for g in valid)
    result.user_submissions = users.height
    result.user_valid = int(users.get_column("_valid").sum())
    result.valid = len(valid)
    result.indicators = true_values.height
    result.polars_threads = pl.thread_pool_size()
    return result


def _child(which: str) -> Result:
    cmd = [sys.executable, __file__, "--child", which]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    data = json.loads(done.stdout.strip().splitlines()[-1])
    data["stages"] = [(str(n), float(s), float(m)) for n, s, m in data["stages"]]
    return Result(**data)


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    found = re.search(r"^Model name:\s*(.+)$", out, re.MULTILINE)
    return found.group(1).strip() if found else "unknown CPU"


def table(results: list[Result]) -> list[str]:
    """The markdown table: one row per stage, wall seconds and peak RSS for each run."""
    head, rule = "| stage |", "| --- |"
    for r in results:
        label = "default study" if r.which == "default" else "1,000,000 user responses"
        head += f" {label}: s | peak RSS, MB |"
        rule += " ---: | ---: |"
    lines = [head, rule]
    for i, (name, _, _) in enumerate(results[0].stages):
        line = f"| {name} |"
        for r in results:
            _, seconds, peak = r.stages[i]
            line += f" {seconds:.2f} | {peak:,.0f} |"
        lines.append(line)
    totals: list[tuple[str, list[float]]] = [
        ("simulate (all stages but loading and screening)", [r.simulate_s for r in results]),
        ("simulate + screen", [r.simulate_s + r.screen_s for r in results]),
    ]
    for label, values in totals:
        lines.append(f"| **{label}** |" + "".join(f" **{v:.2f}** | |" for v in values))
    return lines


def verdict(r: Result) -> str:
    simulate_max, screen_max = TARGETS[r.which]
    if screen_max is None:
        both = r.simulate_s + r.screen_s
        ok = both <= simulate_max
        return f"{r.which}: simulate + screen {both:.1f} s (target <= {simulate_max:.0f} s): " + (
            "met" if ok else "NOT met"
        )
    ok = r.simulate_s <= simulate_max and r.screen_s <= screen_max
    return (
        f"{r.which}: simulate {r.simulate_s:.1f} s (target <= {simulate_max:.0f} s), "
        f"screen {r.screen_s:.1f} s (target <= {screen_max:.0f} s): " + ("met" if ok else "NOT met")
    )


def main() -> None:
    ap = argparse.ArgumentParser(description="Speed and memory of simulate() and screen().")
    ap.add_argument("--only", choices=["default", "scale"])
    ap.add_argument("--child", choices=["default", "scale"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(asdict(run(args.child))))
        return
    import numpy as np
    import polars as pl

    print(
        f"{os.cpu_count()} cores, {_cpu()}, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, Polars {pl.__version__}"
    )
    results = [_child(w) for w in ([args.only] if args.only else ["default", "scale"])]
    print()
    print("\n".join(table(results)))
    print()
    for r in results:
        print(
            f"{r.which}: {r.user_population:,} synthetic users; {r.submissions_raw:,} submissions "
            f"collected, {r.submissions:,} once the quotas closed, {r.valid:,} valid "
            f"({r.user_submissions:,} user submissions, {r.user_valid:,} valid); truth of "
            f"{r.indicators} indicators; Polars on {r.polars_threads} threads"
        )
    for r in results:
        print(verdict(r))


if __name__ == "__main__":
    main()
