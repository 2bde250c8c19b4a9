"""Helper processes: the machine's other cores, for `impactstudy run`.

The simulator and the PDF writer spend most of their time in Python code, which one process
runs on one core at a time. A `Helper` starts worker processes (spawned: a fresh interpreter that
inherits no threads) which load the same study folder, and hands them whole pieces of work in
the order they were submitted: a group's synthetic population, the impact model's input-output
draws, the PDF. A piece that no process has started yet can be taken back (`Future.cancel()`)
and done by the caller itself; that is how the simulator shares out its groups. Every piece is a
pure function of the study and its seed, so a run gives the same bytes with helpers or without.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

if TYPE_CHECKING:
    from impactstudy.study import Study

__all__ = [
    "ONE_THREAD",
    "Helper",
    "HelperError",
    "available_cores",
    "default_jobs",
    "study_digest",
]

P = ParamSpec("P")
R = TypeVar("R")


class HelperError(RuntimeError):
    """A helper process could not do its work: it stopped, or its study differs from ours."""


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_jobs() -> int:
    """Processes for a run: two where two cores are free (the main process and one helper).
    More helpers would each load the study and a population again for little gain: the run's
    work comes in a few large pieces (docs/benchmarks.md)."""
    return min(available_cores(), 2)


def study_digest(path: Path | str) -> str:
    """SHA-256 over a study folder's file names and bytes: a helper checks that the folder it
    loaded is the one the run loaded."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode("utf-8") + b"\0")
            h.update(p.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


# -- in the helper process -------------------------------------------------------------------

#: one thread each for Polars and BLAS, in `impactstudy run` and its helpers: each process has
#: a core of its own; Polars' threads gain nothing on the run's many small queries; and the last
#: bits of a threaded BLAS product depend on the thread count
ONE_THREAD = {"POLARS_MAX_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _start() -> None:
    """Before anything is imported in a new helper process (a user's own settings win)."""
    for key, value in ONE_THREAD.items():
        os.environ.setdefault(key, value)


_LOADED: dict[str, Study] = {}


def _study(path: str, digest: str) -> Study:
    study = _LOADED.get(path)
    if study is None:
        from impactstudy.study import load

        study = load(path)
        if study_digest(path) != digest:
            raise HelperError(
                f"{path}: the study folder changed on disk while the run was starting; "
                "run again (or with --jobs 1)"
            )
        _LOADED[path] = study
    return study


def _loaded(study: Study) -> None:
    """Nothing but the study loaded: a process's first piece of work."""


def _call(
    path: str,
    digest: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    with_study: bool,
) -> Any:
    if with_study:
        return fn(_study(path, digest), *args, **kwargs)
    return fn(*args, **kwargs)


# -- in the run's process --------------------------------------------------------------------


@dataclass
class _Item:
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    with_study: bool


class Helper(Executor):
    """``processes`` helper processes that load the study folder ``study``, fed first come,
    first served. They start at once, so they load it while the caller loads its own copy;
    `check` then says whether the two are the same.

    Use as a context manager: leaving it waits for the work handed out, then stops the
    processes (without waiting for them to free their memory); leaving it on an error (or
    Ctrl-C) stops them at once."""

    def __init__(self, study: Path | str, processes: int = 1) -> None:
        if processes < 1:
            raise ValueError("a Helper needs at least one process")
        self._path = str(Path(study).resolve())
        self._digest = study_digest(self._path)
        self._pool = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
        )
        self._pending: deque[_Item] = deque()
        self._processes = processes
        self._running = 0  # pieces handed to the processes and not yet back
        self._ready = threading.Condition()
        self._closed = False
        # two feeders a process: see _take
        self._threads = [
            threading.Thread(target=self._feed, name=f"impactstudy-helper-{i}", daemon=True)
            for i in range(2 * processes)
        ]
        for t in self._threads:
            t.start()
        for _ in range(processes):  # load the study now, while the caller loads its own
            self._put(_loaded, (), {}, with_study=True)

    def check(self, study: Study) -> None:
        """Raise `HelperError` unless ``study`` was loaded from this helper's folder, unchanged
        since the helper started."""
        same = str(Path(study.path).resolve()) == self._path
        if not same or study_digest(self._path) != self._digest:
            raise HelperError(
                f"{study.path}: not the study folder the helper processes loaded "
                f"({self._path}), or it changed on disk since; run again (or with --jobs 1)"
            )

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """``fn(*args, **kwargs)`` in a helper process (``fn`` and its arguments are pickled:
        a module-level function)."""
        return self._put(fn, args, kwargs, with_study=False)

    def submit_study(
        self, fn: Callable[Concatenate[Study, P], R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Future[R]:
        """``fn(study, *args, **kwargs)`` in a helper process, with the helper's own copy of
        the study (loaded from the same folder)."""
        return self._put(fn, args, kwargs, with_study=True)

    def _put(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        with_study: bool,
    ) -> Future[Any]:
        future: Future[Any] = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("cannot submit work to a closed Helper")
            self._pending.append(_Item(future, fn, args, kwargs, with_study))
            self._ready.notify_all()
        return future

    def _take(self) -> _Item | None:
        """The next piece for a process, once one may have it; None when closed and drained.

        A process gets a second piece while it works on one (so it never waits for the last
        one's result to come back: a population takes a second to pass), but not the last
        pieces: those are left for the caller to take back while this process is busy."""
        with self._ready:
            while True:
                live = [i for i in self._pending if not i.future.cancelled()]
                if live and (self._running < self._processes or len(live) > self._processes):
                    self._pending = deque(live[1:])
                    self._running += 1
                    return live[0]
                if self._closed and not live:
                    self._pending.clear()
                    return None
                self._ready.wait()

    def _feed(self) -> None:
        """Hand out the next piece nobody has taken back, wait for it."""
        while True:
            item = self._take()
            if item is None:
                return
            if not item.future.set_running_or_notify_cancel():
                self._done()
                continue  # taken back by the caller
            try:
                result = self._pool.submit(
                    _call,
                    self._path,
                    self._digest,
                    item.fn,
                    item.args,
                    item.kwargs,
                    item.with_study,
                ).result()
            except BrokenProcessPool as exc:
                item.future.set_exception(
                    HelperError(
                        "a helper process stopped unexpectedly (killed, or out of memory?); "
                        f"run again with --jobs 1 ({exc})"
                    )
                )
            except BaseException as exc:
                item.future.set_exception(exc)
            else:
                item.future.set_result(result)
            self._done()

    def _done(self) -> None:
        with self._ready:
            self._running -= 1
            self._ready.notify_all()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; with ``cancel_futures`` drop what no process has started, and
        with ``wait=False`` also stop the processes at once."""
        with self._ready:
            self._closed = True
            if cancel_futures:
                while self._pending:
                    self._pending.popleft().future.cancel()
            self._ready.notify_all()
        if wait:
            for t in self._threads:  # they hand out what is pending, then wait for it
                t.join()
        else:
            # Python 3.14 has ProcessPoolExecutor.terminate_workers(); before it, the processes
            processes = getattr(self._pool, "_processes", None) or {}
            for proc in list(processes.values()):
                proc.terminate()
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            with self._ready:
                self._closed = True
                self._ready.notify_all()
            for t in self._threads:  # every piece submitted is done
                t.join()
        # then nothing is left to do: a process freeing a population's memory on its way out
        # takes a second, the kernel frees it at once
        self.shutdown(wait=False, cancel_futures=True)
