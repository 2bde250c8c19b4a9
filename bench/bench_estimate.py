"""Speed, memory and agreement of impactstudy's estimation engine against svy and R survey.

A stratified two-stage-style sample (62 strata x 20 PSUs, ultimate-cluster Taylor variance: ids =
PSU, strata, weights, no fpc) at each size given by ``--rows``, generated with NumPy's seeded
Generator and written once to Parquet (read by impactstudy and svy) and to raw little-endian
binary columns (read by R with base ``readBin``: R has no Parquet or fast CSV reader here).
Four tasks, each timed in a child process of its own per tool, loading excluded:

- means: 5 means with SE (R ``svymean(~y1+...+y5)``)
- domain: 31 domain means with SE (R ``svyby(~y1, ~prov, svymean)``)
- props: proportions of a 5-category variable with SE (R ``svymean(~cat5)``)
- rake: raking to 3 margins (31 provinces, 2 genders, 6 age bands), weights only, to convergence

Each task is run up to ``--repeat`` times and the best time kept; a run slower than ``--slow``
seconds is not repeated. Declaring the design is timed apart (the "design" rows). Estimates and
SEs of impactstudy are compared with svy's and R's (raked weights: all of them), and the run fails
if any differs by more than 1e-9 relative. Peak RSS is the child's high-water mark (VmHWM),
which includes the loaded data (shown apart). For impactstudy, each task's time is compared with
one pass over the float64/int64 columns it reads, at the bandwidth measured in the same process.

Run: .venv/bin/python bench/bench_estimate.py --rows 1000000 10000000
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
R_SCRIPT = HERE / "r" / "bench_estimate.R"
N_STRATA = 62
PSU_PER_STRATUM = 20
N_PROV = 31
POPULATION = 1_100_000_000  # the population count every raking margin sums to
TASKS = ["means", "domain", "props", "rake"]
TOOLS = ["impactstudy", "svy", "R"]
YS = ["y1", "y2", "y3", "y4", "y5"]
LEVELS = {
    "prov": [f"P{i:02d}" for i in range(1, N_PROV + 1)],
    "gender": ["F", "M"],
    "age": [f"A{i}" for i in range(1, 7)],
    "cat5": [f"C{i}" for i in range(1, 6)],
}
MARGINS = ["prov", "gender", "age"]
TASK_TITLE = {
    "design": "declare the design",
    "means": "5 means with SE",
    "domain": "31 domain means with SE",
    "props": "5-category proportions with SE",
    "rake": "raking to 3 margins",
}
TOLERANCE = 1e-9


# --------------------------------------------------------------------------------------------
# data


def generate(n: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    """The sample's columns (categories as 0-based codes) and the raking margins' targets."""
    rng = np.random.default_rng(seed)
    n_psu = N_STRATA * PSU_PER_STRATUM
    psu = (np.arange(n, dtype=np.int64) * n_psu) // n  # PSUs of (nearly) equal size
    stratum = psu // PSU_PER_STRATUM
    region = stratum // 2  # 31 regions x urban/rural
    urban = (stratum % 2).astype(np.float64)
    psu_effect = rng.normal(0.0, 1.0, n_psu)[psu]
    base = rng.lognormal(0.0, 0.3, n_psu)[psu] * rng.lognormal(0.0, 0.2, n)
    w = base * (0.97 * POPULATION / base.sum())
    # province: the stratum's region for 80% of rows, any province otherwise
    prov = np.where(rng.random(n) < 0.8, region, rng.integers(0, N_PROV, n))
    gender = (rng.random(n) < 0.55 - 0.1 * urban).astype(np.int64)
    age_p = np.array([0.26, 0.22, 0.18, 0.14, 0.12, 0.08])
    shift = 0.5 * urban + 0.4 * gender  # younger in towns and among men
    age = np.clip(
        np.searchsorted(np.cumsum(age_p), rng.random(n)) - (rng.random(n) < 0.25 * shift), 0, 5
    ).astype(np.int64)
    cat5 = np.clip(rng.integers(0, 5, n) + (rng.random(n) < age / 10.0), 0, 4).astype(np.int64)
    cols: dict[str, np.ndarray] = {
        "stratum": stratum,
        "psu": psu,
        "w": w,
        "y1": np.exp(8.0 + 0.3 * urban + 0.2 * psu_effect + rng.normal(0.0, 0.8, n)),
        "y2": 40.0 + 3.0 * age + 2.0 * psu_effect + rng.normal(0.0, 10.0, n),
        "y3": (rng.random(n) < 0.3 + 0.05 * psu_effect.clip(-2, 2) + 0.1 * urban).astype(
            np.float64
        ),
        "y4": rng.poisson(2.0 + 0.5 * urban + 0.2 * gender).astype(np.float64),
        "y5": 50.0 + 10.0 * psu_effect + rng.uniform(0.0, 100.0, n),
        "prov": prov.astype(np.int64),
        "gender": gender,
        "age": age,
        "cat5": cat5,
    }
    shares = {
        "prov": rng.uniform(0.5, 1.5, N_PROV),
        "gender": np.array([0.49, 0.51]),
        "age": np.array([0.15, 0.17, 0.18, 0.18, 0.17, 0.15]),
    }
    targets: dict[str, dict[str, float]] = {}
    for m, s in shares.items():
        counts = np.floor(POPULATION * s / s.sum())
        counts[-1] = POPULATION - counts[:-1].sum()  # every margin sums to POPULATION exactly
        targets[m] = {lev: float(c) for lev, c in zip(LEVELS[m], counts, strict=True)}
    return cols, targets


def write_data(n: int, seed: int, root: Path) -> Path:
    """Write the sample once (Parquet + raw binary + targets); reuse it when already there."""
    d = root / f"n{n}_seed{seed}"
    if (d / "done").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    cols, targets = generate(n, seed)
    frame: dict[str, Any] = {}
    for name, a in cols.items():
        if name in LEVELS:
            frame[name] = pl.Series(name, LEVELS[name], dtype=pl.String).gather(a)
            (a + 1).astype("<i4").tofile(d / f"{name}.bin")  # R factor codes, 1-based
            (d / f"levels_{name}.txt").write_text("\n".join(LEVELS[name]) + "\n")
        elif name in ("stratum", "psu"):
            frame[name] = pl.Series(name, a, dtype=pl.Int32)
            (a + 1).astype("<i4").tofile(d / f"{name}.bin")
        else:
            frame[name] = pl.Series(name, a, dtype=pl.Float64)
            a.astype("<f8").tofile(d / f"{name}.bin")
    pl.DataFrame(frame).write_parquet(d / "data.parquet")
    for m, t in targets.items():
        lines = ["level,count"] + [f"{k},{v:.1f}" for k, v in t.items()]
        (d / f"targets_{m}.csv").write_text("\n".join(lines) + "\n")
    (d / "targets.json").write_text(json.dumps(targets))
    (d / "n.txt").write_text(f"{n}\n")
    (d / "done").write_text("")
    return d


# --------------------------------------------------------------------------------------------
# child processes: one tool, one task


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _timed(f: Callable[[], Any], repeat: int, slow: float) -> tuple[Any, list[float]]:
    times: list[float] = []
    result = None
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        result = f()
        times.append(time.perf_counter() - t)
        if times[-1] > slow:
            break
    return result, times


def _pass_time(arrays: list[np.ndarray]) -> tuple[float, int]:
    """Best-of-5 time of one np.sum over each array, and the bytes read."""
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for a in arrays:
            a.sum()
        best = min(best, time.perf_counter() - t)
    return best, sum(a.nbytes for a in arrays)


def _load(d: Path) -> pl.DataFrame:
    """The sample with its categorical columns as Enums (Polars' factor: codes plus levels), as R
    gets factors; loading is outside every timing."""
    data = pl.read_parquet(d / "data.parquet")
    return data.with_columns(pl.col(c).cast(pl.Enum(LEVELS[c])) for c in LEVELS)


def child_impactstudy(d: Path, task: str, out: Path, repeat: int, slow: float, eps: float) -> None:
    import impactstudy
    from impactstudy.estimate import Design, by, mean
    from impactstudy.weighting import rake

    data = _load(d)
    targets = json.loads((d / "targets.json").read_text())
    gc.collect()
    rss_loaded = _status("VmRSS")
    t = time.perf_counter()
    design = Design(data, ids="psu", strata="stratum", weights="w")
    t_design = time.perf_counter() - t
    res: dict[str, Any] = {}
    if task == "means":
        fr, times = _timed(lambda: mean(design, YS), repeat, slow)
        res["labels"] = YS
        res["est"] = fr["estimate"].to_list()
        res["se"] = fr["se"].to_list()
    elif task == "domain":
        fr, times = _timed(lambda: by(design, "y1", "prov"), repeat, slow)
        res |= {"labels": fr["domain"].to_list(), "est": fr["estimate"].to_list()}
        res["se"] = fr["se"].to_list()
    elif task == "props":
        fr, times = _timed(lambda: mean(design, "cat5"), repeat, slow)
        res |= {"labels": fr["level"].to_list(), "est": fr["estimate"].to_list()}
        res["se"] = fr["se"].to_list()
    else:
        margins = {m: targets[m] for m in MARGINS}
        rk, times = _timed(lambda: rake(design, margins, epsilon=eps), repeat, slow)
        np.save(out.with_suffix(".npy"), rk.weights)
    hwm = _status("VmHWM")
    # one pass over the columns the task reads, as float64 / int64
    stage = design.stages[0]

    def codes(c: str) -> np.ndarray:
        return data.get_column(c).to_physical().cast(pl.Int64).to_numpy()

    reads = {
        "means": [design.weights, stage.stratum, stage.psu, *(data[y].to_numpy() for y in YS)],
        "domain": [design.weights, stage.stratum, stage.psu, data["y1"].to_numpy(), codes("prov")],
        "props": [design.weights, stage.stratum, stage.psu, codes("cat5")],
        "rake": [design.weights, *(codes(m) for m in MARGINS)],
    }[task]
    pass_s, nbytes = _pass_time(reads)
    res |= {
        "times": times,
        "design": t_design,
        "rss_loaded": rss_loaded,
        "hwm": hwm,
        "pass_s": pass_s,
        "pass_bytes": nbytes,
        "module": impactstudy.__file__,
    }
    out.write_text(json.dumps(res))


def child_svy(d: Path, task: str, out: Path, repeat: int, slow: float, eps: float) -> None:
    import svy

    data = _load(d)
    targets = json.loads((d / "targets.json").read_text())
    gc.collect()
    rss_loaded = _status("VmRSS")
    t = time.perf_counter()
    sample = svy.Sample(data, svy.Design(stratum="stratum", psu="psu", wgt="w"))
    t_design = time.perf_counter() - t
    res: dict[str, Any] = {}
    if task == "means":
        got, times = _timed(lambda: sample.estimation.mean(YS), repeat, slow)
        frames = [g.to_polars() for g in got]
        res["labels"] = YS
        res["est"] = [fr["est"][0] for fr in frames]
        res["se"] = [fr["se"][0] for fr in frames]
    elif task == "domain":
        got, times = _timed(lambda: sample.estimation.mean("y1", by="prov"), repeat, slow)
        fr = got.to_polars()
        res |= {"labels": fr["prov"].to_list(), "est": fr["est"].to_list()}
        res["se"] = fr["se"].to_list()
    elif task == "props":
        got, times = _timed(lambda: sample.estimation.prop("cat5"), repeat, slow)
        fr = got.to_polars()
        res |= {"labels": fr["cat5"].to_list(), "est": fr["est"].to_list()}
        res["se"] = fr["se"].to_list()
    else:
        controls = {m: targets[m] for m in MARGINS}

        def f() -> Any:
            return sample.weighting.rake(controls=controls, tol=eps, max_iter=100)

        rk, times = _timed(f, repeat, slow)
        np.save(out.with_suffix(".npy"), rk.data["rk_wgt"].to_numpy())
    res |= {"times": times, "design": t_design, "rss_loaded": rss_loaded, "hwm": _status("VmHWM")}
    out.write_text(json.dumps(res))


def _r_status() -> str | None:
    """None when R survey can run, else why not."""
    if shutil.which("Rscript") is None:
        return "Rscript is not on PATH"
    probe = subprocess.run(
        ["Rscript", "-e", "cat(as.character(packageVersion('survey')))"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return "the R package survey is not installed"
    return None


def _r_version() -> str:
    out = subprocess.run(
        ["Rscript", "-e", "cat(R.version.string, as.character(packageVersion('survey')))"],
        capture_output=True,
        text=True,
    ).stdout
    return out.strip()


def _git(*a: str) -> str:
    return subprocess.run(
        ["git", "-C", str(HERE.parent), *a], capture_output=True, text=True, check=True
    ).stdout.strip()


def _export_commit(rev: str, dest: Path) -> str:
    """Write src/ as committed at ``rev`` under ``dest``; the commit's short hash."""
    sha = _git("rev-parse", "--short", rev)
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", sha, "src"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return sha


def _describe_source(commit: str | None) -> str:
    """Which impactstudy the children import: a commit, or the working tree's commit and
    whether its src/ has uncommitted changes."""
    if commit is not None:
        return f"commit {commit} (src/ from git archive)"

    def git(*a: str) -> str:
        try:
            return _git(*a)
        except (OSError, subprocess.CalledProcessError):
            return ""

    head = git("rev-parse", "--short", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--", "src")
    return f"working tree at {head}" + (
        f" with {len(dirty.splitlines())} uncommitted change(s) under src/" if dirty else ""
    )


def run_child(tool: str, d: Path, task: str, work: Path, args: argparse.Namespace) -> dict:
    """Run one (tool, task) in a fresh process; its result, with the child's peak RSS."""
    out = work / f"{tool}_{d.name}_{task}"
    common = [str(args.repeat), str(args.slow), repr(args.epsilon)]
    if tool == "R":
        cmd = ["Rscript", str(R_SCRIPT), str(d), task, str(out), *common]
    else:
        cmd = [sys.executable, __file__, "--child", tool, str(d), task, str(out), *common]
    env = dict(os.environ)
    if tool == "impactstudy" and args.commit:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.src), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-5:]
        return {"error": " / ".join(tail) or f"exit {proc.returncode}"}
    if tool == "R":
        res: dict[str, Any] = {}
        for line in Path(f"{out}.txt").read_text().splitlines():
            key, _, rest = line.partition(" ")
            if key in ("labels", "version"):
                res[key] = rest.split()
            else:
                vals = [float(v) for v in rest.split()]
                res[key] = vals if key in ("times", "est", "se") else vals[0]
        weights = Path(f"{out}.bin")
    else:
        res = json.loads(out.read_text())
        weights = out.with_suffix(".npy")
    if weights.exists():
        res["weights"] = np.fromfile(weights, dtype="<f8") if tool == "R" else np.load(weights)
        weights.unlink()
    return res


# --------------------------------------------------------------------------------------------
# comparison and report


def max_rel_diff(a: dict, b: dict) -> float:
    """Largest relative difference of b from a over estimates and SEs (or raked weights)."""
    if "weights" in a:
        x, y = a["weights"], b["weights"]
        if x.shape != y.shape:
            return float("inf")
        return float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-300)))
    got = dict(zip(a["labels"], zip(a["est"], a["se"], strict=True), strict=True))
    want = dict(zip(b["labels"], zip(b["est"], b["se"], strict=True), strict=True))
    if set(got) != set(want):
        return float("inf")
    worst = 0.0
    for k, pair in want.items():
        for x, y in zip(got[k], pair, strict=True):
            worst = max(worst, abs(x - y) / max(abs(y), 1e-300))
    return worst


def fmt_s(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt_mb(x: float | None) -> str:
    return "–" if x is None else f"{x / 2**20:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--seed", type=int, default=2018)
    ap.add_argument("--tasks", nargs="+", choices=TASKS, default=TASKS)
    ap.add_argument("--tools", nargs="+", choices=TOOLS, default=TOOLS)
    ap.add_argument("--repeat", type=int, default=3, help="runs per task, best kept")
    ap.add_argument("--slow", type=float, default=10.0, help="do not repeat runs slower than this")
    ap.add_argument("--epsilon", type=float, default=1e-12, help="raking tolerance")
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench_estimate")
    ap.add_argument("--keep-data", action="store_true", help="keep the generated data")
    ap.add_argument("--json", type=Path, help="also write every measurement here")
    ap.add_argument(
        "--commit",
        help="measure impactstudy as committed at this revision (its src/ taken with "
        "`git archive`) instead of the working tree, which others may be editing",
    )
    ap.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.src = None
    if args.child:
        tool, d, task, out, repeat, slow, eps = args.child
        child = child_impactstudy if tool == "impactstudy" else child_svy
        child(Path(d), task, Path(out), int(repeat), float(slow), float(eps))
        return

    import svy

    tools = list(args.tools)
    r_missing = _r_status() if "R" in tools else None
    if r_missing:
        tools.remove("R")
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    print(
        f"Python {sys.version.split()[0]}, NumPy {np.__version__}, Polars {pl.__version__} "
        f"({pl.thread_pool_size()} threads), svy {svy.__version__}, "
        f"{_r_version() if 'R' in tools else 'R: skipped (' + str(r_missing) + ')'}; "
        f"{platform.machine()}, {os.cpu_count()} cores, {cpu}"
    )
    work = Path(tempfile.mkdtemp(prefix="bench_estimate_"))
    if args.commit:
        args.commit = _export_commit(args.commit, work)
        args.src = work / "src"
    print(
        f"impactstudy: {_describe_source(args.commit)}; load average at start "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    print(
        f"best of up to {args.repeat} runs (a run over {args.slow:g} s is not repeated); "
        f"raking epsilon {args.epsilon:g}\n",
        flush=True,
    )
    results: dict[tuple[int, str, str], dict] = {}
    args.data_dir.mkdir(parents=True, exist_ok=True)
    failed = False
    try:
        for n in args.rows:
            t = time.perf_counter()
            d = write_data(n, args.seed, args.data_dir)
            print(f"{n:,} rows: data ready in {time.perf_counter() - t:.1f} s ({d})", flush=True)
            for task in args.tasks:
                for tool in tools:
                    t = time.perf_counter()
                    res = run_child(tool, d, task, work, args)
                    results[(n, task, tool)] = res
                    note = res.get("error") or ", ".join(f"{x:.3f}" for x in res["times"])
                    print(
                        f"  {task:7s} {tool:12s} {note}  [child {time.perf_counter() - t:.0f} s]",
                        flush=True,
                    )
            if not args.keep_data:
                shutil.rmtree(d)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def best(n: int, task: str, tool: str) -> float | None:
        r = results.get((n, "means" if task == "design" else task, tool))
        if not r or "error" in r:
            return None
        return float(r["design"]) if task == "design" else min(r["times"])

    print(
        "\n| task | rows | impactstudy s | svy s | R s | vs svy | vs R "
        "| max rel diff vs svy / R | peak RSS MB (data loaded) impactstudy / svy / R |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    tasks = [t for t in TASKS if t in args.tasks]
    for task in ["design", *tasks]:
        for n in args.rows:
            ours = best(n, task, "impactstudy")
            cells = [TASK_TITLE[task], f"{n:,}"]
            for tool in ("impactstudy", "svy", "R"):
                r = results.get((n, task if task != "design" else "means", tool), {})
                one = r.get("times") and len(r["times"]) == 1 and task != "design"
                cells.append(fmt_s(best(n, task, tool)) + (" (1 run)" if one else ""))
            for tool in ("svy", "R"):
                other = best(n, task, tool)
                cells.append(f"{other / ours:.1f}×" if ours and other else "–")
            if task == "design":
                cells += ["", ""]
            else:
                ref = results.get((n, task, "impactstudy"), {})
                diffs = []
                for tool in ("svy", "R"):
                    other = results.get((n, task, tool), {})
                    if "error" in ref or "error" in other or not ref or not other:
                        diffs.append("–")
                        continue
                    diff = max_rel_diff(ref, other)
                    if not diff <= TOLERANCE:
                        failed = True
                    diffs.append(f"{diff:.1e}" + ("" if diff <= TOLERANCE else " FAIL"))
                cells.append(" / ".join(diffs))
                rss = []
                for tool in ("impactstudy", "svy", "R"):
                    r = results.get((n, task, tool), {})
                    rss.append(
                        f"{fmt_mb(r['hwm'])} ({fmt_mb(r['rss_loaded'])})" if "hwm" in r else "–"
                    )
                cells.append(" / ".join(rss))
            print("| " + " | ".join(cells) + " |")

    print("\nimpactstudy against one pass over the columns each task reads (np.sum, same process):")
    print("| task | rows | columns read, MB | one pass, ms | bandwidth, GB/s | task / one pass |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for task in tasks:
        for n in args.rows:
            r = results.get((n, task, "impactstudy"), {})
            if "pass_s" not in r:
                continue
            ours = min(r["times"])
            print(
                f"| {TASK_TITLE[task]} | {n:,} | {r['pass_bytes'] / 2**20:,.0f} "
                f"| {r['pass_s'] * 1e3:.1f} | {r['pass_bytes'] / r['pass_s'] / 1e9:.1f} "
                f"| {ours / r['pass_s']:.0f}× |"
            )
    print("\nload average at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    errors = [(k, r["error"]) for k, r in results.items() if "error" in r]
    for (n, task, tool), err in errors:
        print(f"\nERROR {tool} {task} at {n:,} rows: {err}")
    if r_missing:
        print(f"\nR survey skipped: {r_missing}.")
    print(
        "\nReproduce: .venv/bin/python bench/bench_estimate.py --rows "
        + " ".join(str(n) for n in args.rows)
        + (f" --seed {args.seed}" if args.seed != 2018 else "")
        + (f" --commit {args.commit}" if args.commit else "")
    )
    if args.json:
        dump = {
            f"{n}/{task}/{tool}": {k: v for k, v in r.items() if k != "weights"}
            for (n, task, tool), r in results.items()
        }
        args.json.write_text(json.dumps(dump, indent=1))
    if failed or errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
