"""Per-column cleaning rules from config (`data.clean`, typed by `pipeline.config.ColumnRules`),
compiled into row steps that name a reason per failure.

    data:
      clean:
        age:       {required: true, range: {gt: 0, le: 120}}      # the reference design's age > 0
        workclass: {impute: constant, fill_value: missing}          # impute: mean | median | mode | constant
        income:    {allowed: ["<=50K", ">50K"]}
        email:     {regex: "[^@]+@[^@]+"}
      dedup: [user_id, item_id]                                   # key columns; [] disables

Reasons look like `range:age`, so the data report counts rows per rule. Imputation is applied by
the feature preprocessor with statistics fitted on the training split only (no leakage); cleaning
keeps those rows and reports how many values will be imputed.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import ColumnRules, DataConfig, SplitConfig
from pipeline.data.schema import as_text, coerce

RANGE_OPS = {"gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal}
MALFORMED_COLUMN = "_malformed"  # set by the CSV reader on rows it could not parse


class TypeStep:
    """Quarantines the rows the CSV reader could not parse (`_malformed` set), normalises text ("?" and
    blanks -> missing) and coerces every declared column (datetime columns with one format each, decided
    for the whole column: `infer_datetime_formats`)."""

    def __init__(self, schema: dict[str, str], na_values: list[str], datetime_formats: dict[str, str] | None = None):
        self.schema, self.na_values, self.datetime_formats = schema, set(na_values), datetime_formats or {}

    def __call__(self, batch: pd.DataFrame):
        reasons = np.full(len(batch), "", dtype=object)
        if MALFORMED_COLUMN in batch:
            malformed = batch[MALFORMED_COLUMN].notna().to_numpy()
            reasons[malformed] = "malformed_row"
        for column, kind in self.schema.items():
            values, bad = coerce(batch[column], kind, self.na_values, self.datetime_formats.get(column))
            batch[column] = values
            reasons[(reasons == "") & bad] = f"type:{column}"
        return batch, reasons


class RuleStep:
    """Required / range / allowed / regex checks for one column."""

    def __init__(self, column: str, rules: ColumnRules):
        self.column, self.rules = column, rules
        self.pattern = re.compile(rules.regex) if rules.regex is not None else None

    def __call__(self, batch: pd.DataFrame):
        values = batch[self.column]
        present = values.notna().to_numpy()
        reasons = np.full(len(batch), "", dtype=object)
        if self.rules.required and self.rules.impute is None:
            reasons[~present] = f"missing:{self.column}"
        if self.rules.range:
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            ok = np.ones(len(batch), bool)
            for op, bound in self.rules.range.items():
                with np.errstate(invalid="ignore"):
                    ok &= RANGE_OPS[op](numbers, bound)
            reasons[(reasons == "") & present & ~ok] = f"range:{self.column}"
        if self.rules.allowed is not None:
            ok = as_text(values).isin([str(v) for v in self.rules.allowed]).to_numpy(dtype=bool, na_value=False)
            reasons[(reasons == "") & present & ~ok] = f"allowed:{self.column}"
        if self.pattern is not None:
            ok = values.astype("string").str.fullmatch(self.pattern).to_numpy(dtype=bool, na_value=False)
            reasons[(reasons == "") & present & ~ok] = f"regex:{self.column}"
        return batch, reasons


class PresentStep:
    """Rows missing a column the split places them by (stratum, group, time) are quarantined as
    `missing:<column>`, rather than sent to one split by default."""

    def __init__(self, columns: list[str]):
        self.columns = columns

    def __call__(self, batch):
        reasons = np.full(len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch), "", dtype=object)
        for column in self.columns:
            if column in batch:
                reasons[(reasons == "") & pd.isna(batch[column]).to_numpy(dtype=bool)] = f"missing:{column}"
        return batch, reasons


def rule_steps(data_cfg: DataConfig) -> list:
    # The type step runs without a schema too: it is what quarantines the lines the CSV reader could not parse.
    steps: list = [TypeStep(data_cfg.columns, data_cfg.options.na_values, data_cfg.datetime_formats)]
    steps += [RuleStep(column, rules) for column, rules in data_cfg.clean.items()]
    return steps


def split_columns(split: SplitConfig) -> list[str]:
    """The columns a split method places rows by: a row must have each of them."""
    wanted = {"stratified": [split.stratify], "grouped": [split.group], "temporal": [split.time],
              "leave_last_out": [split.group, split.time]}.get(split.method, [])
    return [c for c in wanted if c]


def infer_datetime_formats(ds, data_cfg: DataConfig) -> dict[str, str]:
    """One format per datetime column: the configured one, else the candidate that reads the most values
    over the whole column (counted per block and summed, so blocks and files cannot change it)."""
    from pipeline.data.features import fit_partials
    from pipeline.data.schema import best_datetime_format, datetime_format_counts

    formats = dict(data_cfg.datetime_formats)
    columns = [c for c, kind in data_cfg.columns.items() if kind == "datetime" and c not in formats]
    if not columns:
        return formats
    na_values = set(data_cfg.options.na_values)
    partials = fit_partials(ds, lambda b: {c: datetime_format_counts(b[c], na_values) for c in columns}, columns=columns)
    for column in columns:
        counts: dict[str, int] = {}
        for part in partials:
            for fmt, n in part[column].items():
                counts[fmt] = counts.get(fmt, 0) + n
        formats[column] = best_datetime_format(counts)
    return formats


def imputation(data_cfg: DataConfig) -> dict[str, dict[str, Any]]:
    """column -> {"strategy": ..., "fill_value": ...} for columns with an `impute` rule."""
    return {c: {"strategy": r.impute, "fill_value": r.fill_value} for c, r in data_cfg.clean.items() if r.impute}
