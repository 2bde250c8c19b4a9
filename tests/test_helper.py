"""Helper processes (`impactstudy.helper`): work handed to another process gives the same bytes
as work done here, errors come back as errors, and a piece no process has started can be taken
back."""

from __future__ import annotations

import os
import pickle
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from impactstudy.cli import cli
from impactstudy.estimate import Estimates
from impactstudy.helper import Helper, HelperError, study_digest
from impactstudy.impact import ModelError, io_draws, run_model
from impactstudy.simulate import Simulation, build_population, simulate
from impactstudy.study import Study, load

MINIMAL = Path(__file__).parent / "studies" / "minimal"


def _group_count(study: Study) -> int:
    return len(study.groups)


def _fail(message: str) -> None:
    raise ValueError(message)


def _die() -> None:
    os._exit(3)


def _nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.fixture(scope="module")
def helper() -> Iterator[Helper]:
    with Helper(MINIMAL) as h:
        yield h


def test_work_runs_in_another_process(helper: Helper) -> None:
    assert helper.submit(os.getpid).result() != os.getpid()


def test_study_bound_work_gets_the_helpers_own_copy(helper: Helper) -> None:
    assert helper.submit_study(_group_count).result() == len(load(MINIMAL).groups)


def test_an_error_comes_back_as_itself(helper: Helper) -> None:
    with pytest.raises(ValueError, match="a message from the helper"):
        helper.submit(_fail, "a message from the helper").result()


def test_a_piece_not_started_can_be_taken_back(helper: Helper) -> None:
    # two pieces keep the process busy (one runs, one waits in it); a third waits here
    busy = [helper.submit(_nap, 1.0) for _ in range(2)]
    waiting = helper.submit(_nap, 0.0)
    assert waiting.cancel()
    assert [b.result() for b in busy] == [1.0, 1.0]
    assert waiting.cancelled()


def test_a_process_that_dies_is_a_clear_error() -> None:
    with Helper(MINIMAL) as h, pytest.raises(HelperError, match=r"stopped unexpectedly.*--jobs 1"):
        h.submit(_die).result()


def test_a_study_changed_on_disk_is_refused(tmp_path: Path) -> None:
    folder = shutil.copytree(MINIMAL, tmp_path / "minimal")
    before = study_digest(folder)
    with Helper(folder) as h:
        h.check(load(folder))  # unchanged: fine
        history = folder / "history.csv"
        history.write_text(history.read_text() + "\n", encoding="utf-8")
        assert study_digest(folder) != before
        with pytest.raises(HelperError, match="changed on disk"):
            h.check(load(folder))


def test_a_closed_helper_takes_no_work() -> None:
    h = Helper(MINIMAL)
    h.shutdown()
    with pytest.raises(RuntimeError, match="closed"):
        h.submit(os.getpid)


def test_a_population_survives_pickling(wechat_study: Study) -> None:
    """Populations pass between processes as zstd Arrow IPC: equal values, types and chunks."""
    pop = build_population(wechat_study, "wecom_provider", 1)
    back = pickle.loads(pickle.dumps(pop))
    assert back.group == pop.group and back.weight == pop.weight
    assert back.frame.equals(pop.frame) and back.frame.schema == pop.frame.schema
    assert back.frame.n_chunks("all") == pop.frame.n_chunks("all")


def test_simulating_with_a_helper_gives_the_same_study(
    wechat_study: Study, wechat_simulation: Simulation
) -> None:
    """The bundled study simulated with one helper process equals the one simulated alone:
    every population, the truth, the sample and every response."""
    handed: list[Future[object]] = []

    class Counting(Helper):
        def submit_study(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            handed.append(future := super().submit_study(fn, *args, **kwargs))
            return future

    with Counting(wechat_study.path) as h:
        shared = simulate(wechat_study, wechat_simulation.seed, helper=h)
    # both processes built populations: the helper the users' at least, this one the rest
    built_there = [f for f in handed if not f.cancelled()]
    assert len(handed) == len(wechat_study.groups)
    assert 1 <= len(built_there) < len(handed)
    for g, pop in wechat_simulation.populations.items():
        assert shared.populations[g].frame.equals(pop.frame), g
    assert shared.truth.equals(wechat_simulation.truth)
    for g, frame in wechat_simulation.fieldwork.sample.items():
        assert shared.fieldwork.sample[g].equals(frame), g
    for mine, theirs in zip(shared.responses, wechat_simulation.responses, strict=True):
        assert mine.group == theirs.group and mine.submissions.equals(theirs.submissions)


def test_io_draws_made_ahead_give_the_same_run(
    wechat_study: Study, wechat_simulation: Simulation
) -> None:
    truth = wechat_simulation.truth.select(
        "indicator", pl.lit(None, dtype=pl.String).alias("by"), pl.col("value").alias("estimate")
    )
    census = Estimates(truth, truth["indicator"].to_list(), np.zeros((truth.height,) * 2))
    ahead = io_draws(wechat_study, draws=200, seed=3)
    assert ahead is not None and ahead.rows.shape[0] == 200
    with Helper(wechat_study.path) as h:
        remote = h.submit_study(io_draws, draws=200, seed=3).result()
    assert remote is not None and np.array_equal(remote.rows, ahead.rows)
    a = run_model(wechat_study, census, preset="net", draws=200, seed=3)
    b = run_model(wechat_study, census, preset="net", draws=200, seed=3, io=remote)
    assert a.draws.equals(b.draws)
    with pytest.raises(ModelError, match="input-output draws given were made for"):
        run_model(wechat_study, census, preset="net", draws=200, seed=4, io=remote)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_run_with_and_without_a_helper_writes_the_same_bytes(tmp_path: Path) -> None:
    """`impactstudy run --jobs 1` and `--jobs 2`: every artifact, the PDF included, identical."""
    for jobs in ("1", "2"):
        res = CliRunner().invoke(
            cli, ["run", str(MINIMAL), "--jobs", jobs, "--out", str(tmp_path / jobs)]
        )
        assert res.exit_code == 0, res.output
    one, two = _files(tmp_path / "1"), _files(tmp_path / "2")
    assert "report/report.pdf" in one and "model/net/draws.parquet" in one
    assert one.keys() == two.keys()
    assert [f for f in one if one[f] != two[f]] == []


def test_run_refuses_jobs_below_one(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["run", str(MINIMAL), "--jobs", "0", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--jobs" in res.output


def test_shutdown_waits_for_what_was_submitted() -> None:
    h = Helper(MINIMAL)
    naps = [h.submit(_nap, 0.2) for _ in range(3)]
    h.shutdown(wait=True)
    assert [n.result(timeout=0) for n in naps] == [0.2, 0.2, 0.2]


def test_leaving_on_an_error_stops_the_process_at_once() -> None:
    """A piece at work is cut short (the process is stopped), one not started is dropped."""
    with pytest.raises(KeyError), Helper(MINIMAL) as h:
        long = h.submit(_nap, 60.0)
        waiting = h.submit(_nap, 60.0)
        while not long.running():
            time.sleep(0.05)
        started = time.perf_counter()
        raise KeyError("the caller failed")
    with pytest.raises(HelperError, match="stopped unexpectedly"):
        long.result(timeout=20)
    assert time.perf_counter() - started < 20
    assert waiting.cancelled()
