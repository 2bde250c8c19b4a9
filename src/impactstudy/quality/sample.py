"""ValidSample: the screened submissions, their flags, the audit, and how they sit on disk.

On disk a ValidSample is a directory:

    valid_sample.json                 format, study id, province field, rules, groups, provenance
    audit.parquet                     one row per submission x rule measure (see `AUDIT`)
    groups/<group>/submissions.parquet    every submission with its `_q_<rule>` flags and `_valid`
    groups/<group>/repeats/<name>.parquet child tables, as in Responses
    groups/<group>/paradata.parquet       page timings, when there are any
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from impactstudy.study import schema

__all__ = ["AUDIT", "DECISION", "FORMAT", "GroupSample", "ValidSample", "flag_column"]

FORMAT = "impactstudy.valid_sample/1"
DECISION = pl.Enum(["exclude", "flag", "pass"])
#: The audit's columns: which submission (`row` is its 0-based row in its group's frame),
#: which rule and which of its measures, the measured value, the threshold, and the decision:
#: `exclude` or `flag` (the rule's action) when the measure fires, else `pass`.
AUDIT: dict[str, pl.DataType] = {
    "group": pl.Categorical(),
    "row": pl.Int64(),
    "_uuid": pl.String(),
    "rule": pl.Categorical(),
    "kind": pl.Categorical(),
    "measure": pl.Categorical(),
    "value": pl.Float64(),
    "threshold": pl.Float64(),
    "decision": DECISION,
}


def flag_column(rule_id: str) -> str:
    """The Boolean column of one rule: true where the rule fired."""
    return f"_q_{rule_id}"


@dataclass
class GroupSample:
    """One group's submissions, all of them, each with its flags and `_valid`."""

    group: str
    submissions: pl.DataFrame
    repeats: dict[str, pl.DataFrame] = field(default_factory=dict)
    paradata: pl.DataFrame | None = None

    @property
    def valid(self) -> pl.DataFrame:
        """The valid submissions, in their original order."""
        return self.submissions.filter(pl.col("_valid"))

    def valid_repeats(self) -> dict[str, pl.DataFrame]:
        """The repeat rows of valid submissions."""
        keep = self.valid.get_column("_uuid").implode()
        return {
            name: child.filter(pl.col("_parent_uuid").is_in(keep))
            for name, child in self.repeats.items()
        }

    @property
    def n_valid(self) -> int:
        return int(self.submissions.get_column("_valid").sum())


@dataclass
class ValidSample:
    """The quality stage's artifact: every submission flagged, the valid ones marked, an audit
    of every measure, and the rules that made them."""

    study_id: str
    rules: tuple[schema.QualityRule, ...]
    groups: dict[str, GroupSample]
    audit: pl.DataFrame
    #: the questionnaire field holding the stated province (the study's `stratify_by`)
    province: str = "province"
    provenance: dict[str, object] = field(default_factory=dict)

    def __iter__(self) -> Iterator[GroupSample]:
        return iter(self.groups.values())

    def __len__(self) -> int:
        """The number of valid submissions."""
        return sum(g.n_valid for g in self.groups.values())

    # -- tables ----------------------------------------------------------------------------

    def _long(self) -> pl.DataFrame:
        """group, province, rule, fired, and how many exclude-rules fired, per submission x rule."""
        action = {r.id: r.action for r in self.rules}
        excluding = [flag_column(r.id) for r in self.rules if r.action == "exclude"]
        parts = []
        for gs in self:
            sub = gs.submissions
            prov = pl.col(self.province) if self.province in sub.columns else pl.lit(None)
            n_excl = pl.sum_horizontal(excluding) if excluding else pl.lit(0)
            base = sub.select(
                pl.lit(gs.group).alias("group"),
                prov.cast(pl.String).alias("province"),
                n_excl.cast(pl.Int64).alias("_n_excl"),
                *(pl.col(flag_column(r.id)).alias(r.id) for r in self.rules),
            )
            if not self.rules:
                continue
            parts.append(
                base.unpivot(
                    index=["group", "province", "_n_excl"],
                    on=[r.id for r in self.rules],
                    variable_name="rule",
                    value_name="fired",
                )
            )
        if not parts:
            return pl.DataFrame(
                schema={
                    "group": pl.String,
                    "province": pl.String,
                    "_n_excl": pl.Int64,
                    "rule": pl.String,
                    "fired": pl.Boolean,
                    "action": pl.String,
                }
            )
        return pl.concat(parts).with_columns(
            pl.col("rule").replace_strict(action, return_dtype=pl.String).alias("action")
        )

    def _order(self, frame: pl.DataFrame, *, rules: bool) -> pl.DataFrame:
        gi = {g: i for i, g in enumerate(self.groups)}
        keys = [pl.col("group").replace_strict(gi, return_dtype=pl.Int64), pl.col("province")]
        if rules:
            ri = {r.id: i for i, r in enumerate(self.rules)}
            keys.append(pl.col("rule").replace_strict(ri, return_dtype=pl.Int64))
        return frame.sort(keys, nulls_last=True)

    def summary(self) -> pl.DataFrame:
        """Counts by rule x group x province: `responses` (submissions), `fired`, `excluded`
        (fired and the rule excludes) and `excluded_alone` (no other rule excludes them)."""
        long = self._long()
        kinds = {r.id: r.kind for r in self.rules}
        out = long.group_by("group", "province", "rule", "action").agg(
            pl.len().cast(pl.Int64).alias("responses"),
            pl.col("fired").sum().cast(pl.Int64).alias("fired"),
            (pl.col("fired") & (pl.col("action") == "exclude"))
            .sum()
            .cast(pl.Int64)
            .alias("excluded"),
            (pl.col("fired") & (pl.col("action") == "exclude") & (pl.col("_n_excl") == 1))
            .sum()
            .cast(pl.Int64)
            .alias("excluded_alone"),
        )
        out = out.with_columns(
            pl.col("rule").replace_strict(kinds, return_dtype=pl.String).alias("kind")
        ).select(
            "group",
            "province",
            "rule",
            "kind",
            "action",
            "responses",
            "fired",
            "excluded",
            "excluded_alone",
        )
        return self._order(out, rules=True)

    def table(self) -> pl.DataFrame:
        """The valid sample by group and province: submissions, excluded, valid."""
        parts = []
        for gs in self:
            sub = gs.submissions
            prov = pl.col(self.province) if self.province in sub.columns else pl.lit(None)
            parts.append(
                sub.group_by(prov.cast(pl.String).alias("province"))
                .agg(
                    pl.len().cast(pl.Int64).alias("submissions"),
                    (~pl.col("_valid")).sum().cast(pl.Int64).alias("excluded"),
                    pl.col("_valid").sum().cast(pl.Int64).alias("valid"),
                )
                .with_columns(pl.lit(gs.group).alias("group"))
            )
        if not parts:
            return pl.DataFrame(
                schema={
                    "group": pl.String,
                    "province": pl.String,
                    "submissions": pl.Int64,
                    "excluded": pl.Int64,
                    "valid": pl.Int64,
                }
            )
        out = pl.concat(parts).select("group", "province", "submissions", "excluded", "valid")
        return self._order(out, rules=False)

    def exclusions(self) -> pl.DataFrame:
        """Why each excluded submission was excluded: group, row, `_uuid`, and the rules."""
        ex = self.audit.filter(pl.col("decision") == "exclude")
        return ex.group_by("group", "row", "_uuid", maintain_order=True).agg(
            pl.col("rule").unique(maintain_order=True).alias("rules")
        )

    # -- disk ------------------------------------------------------------------------------

    def write(self, path: Path | str) -> Path:
        """Write to the directory `path` (created; existing files are replaced)."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        groups: dict[str, object] = {}
        for gs in self:
            gdir = root / "groups" / gs.group
            gdir.mkdir(parents=True, exist_ok=True)
            gs.submissions.write_parquet(gdir / "submissions.parquet")
            if gs.repeats:
                (gdir / "repeats").mkdir(exist_ok=True)
            for name, child in gs.repeats.items():
                child.write_parquet(gdir / "repeats" / f"{name}.parquet")
            if gs.paradata is not None:
                gs.paradata.write_parquet(gdir / "paradata.parquet")
            groups[gs.group] = {
                "repeats": list(gs.repeats),
                "paradata": gs.paradata is not None,
                "submissions": gs.submissions.height,
                "valid": gs.n_valid,
            }
        self.audit.write_parquet(root / "audit.parquet")
        manifest = {
            "format": FORMAT,
            "study_id": self.study_id,
            "province": self.province,
            "rules": [r.model_dump(mode="json", exclude_none=True) for r in self.rules],
            "groups": groups,
            "provenance": self.provenance,
        }
        text = json.dumps(manifest, ensure_ascii=False, indent=2, default=str)
        (root / "valid_sample.json").write_text(text + "\n", encoding="utf-8")
        return root

    @classmethod
    def read(cls, path: Path | str) -> ValidSample:
        """Read a ValidSample written by `write`."""
        root = Path(path)
        manifest = json.loads((root / "valid_sample.json").read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{root}: not a ValidSample ({FORMAT}) directory")
        groups: dict[str, GroupSample] = {}
        for gid, info in manifest["groups"].items():
            gdir = root / "groups" / gid
            groups[gid] = GroupSample(
                gid,
                pl.read_parquet(gdir / "submissions.parquet"),
                {n: pl.read_parquet(gdir / "repeats" / f"{n}.parquet") for n in info["repeats"]},
                pl.read_parquet(gdir / "paradata.parquet") if info["paradata"] else None,
            )
        audit = pl.read_parquet(root / "audit.parquet").cast(AUDIT)  # type: ignore[arg-type]
        return cls(
            study_id=manifest["study_id"],
            rules=tuple(schema.QualityRule.model_validate(r) for r in manifest["rules"]),
            groups=groups,
            audit=audit,
            province=manifest["province"],
            provenance=manifest["provenance"],
        )
