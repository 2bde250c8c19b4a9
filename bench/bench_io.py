"""Time the batched Monte Carlo of indirect jobs: 10,000 Dirichlet draws of A_d on the 2017
149-sector table, routes A and B in one pass (run: .venv/bin/python bench/bench_io.py)."""

from __future__ import annotations

import time

import numpy as np

from impactstudy.impact import io


def main() -> None:
    table = io.load_table(2017, 149)
    per_output = io.employment_coefficients(table)
    internet = table.index("123")
    direct = np.zeros(table.n)
    direct[internet] = 1e6  # route A: one million direct jobs in internet services
    theta = np.zeros(table.n)
    theta[internet] = 0.1  # route B: 10% of the sector's output
    f = np.vstack([io.route_a_output(direct, per_output), io.route_b_output(theta, table.x)])
    for workers in (1, 2):
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            out = io.indirect_jobs_draws(
                table.A, per_output, f, alpha=200.0, draws=10_000, seed=1, workers=workers
            )
            best = min(best, time.perf_counter() - t0)
        print(
            f"workers={workers}: 10,000 draws x 149 sectors in {best:.2f} s (best of 3); "
            f"route A indirect median {np.median(out[:, 0]):,.0f}, "
            f"5-95% {np.percentile(out[:, 0], 5):,.0f}-{np.percentile(out[:, 0], 95):,.0f}"
        )


if __name__ == "__main__":
    main()
