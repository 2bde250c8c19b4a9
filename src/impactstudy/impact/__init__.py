"""Impact: the economic impact model (direct and input-output jobs, consumption, shares, growth)
with Monte Carlo uncertainty, gross and net presets, and the consistency audit.

- `run_model(study, estimates, preset=...)` / `run_presets`: model.toml over joint draws of the
  survey estimates, priors and the perturbed input-output table (`model`); `io_draws(study)`
  makes the table's draws ahead of the estimates (they do not depend on them).
- `impactstudy.impact.io`: the NBS input-output tables (数据来源：国家统计局), Leontief Type I/II,
  jobs per output, route A/B indirect jobs, Dirichlet perturbation.
- `audit(figures, rules)`: identities among published (or our own) figures (`audit`).
"""

from . import io
from .audit import AuditError, audit, bundled_figures, bundled_rules, load_rules, parse_printed
from .model import (
    IODraws,
    ModelError,
    ModelRun,
    audit_outputs,
    draw_prior,
    io_draws,
    run_model,
    run_presets,
)

__all__ = [
    "AuditError",
    "IODraws",
    "ModelError",
    "ModelRun",
    "audit",
    "audit_outputs",
    "bundled_figures",
    "bundled_rules",
    "draw_prior",
    "io",
    "io_draws",
    "load_rules",
    "parse_printed",
    "run_model",
    "run_presets",
]
