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

from pipeline.config import ColumnRules, DataConfig
from pipeline.data.schema import as_text, coerce

RANGE_OPS = {"gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal}
MALFORMED_COLUMN = "_malformed"  # set by the CSV reader on rows it could not parse


class TypeStep:
    """Normalises text ("?" and blanks -> missing) and coerces every declared column."""

    def __init__(self, schema: dict[str, str], na_values: list[str]):
        self.schema, self.na_values = schema, set(na_values)

    def __call__(self, batch: pd.DataFrame):
        reasons = np.full(len(batch), "", dtype=object)
        if MALFORMED_COLUMN in batch:
            malformed = batch[MALFORMED_COLUMN].notna().to_numpy()
            reasons[malformed] = "malformed_row"
        for column, kind in self.schema.items():
            values, bad = coerce(batch[column], kind, self.na_values)
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


def rule_steps(data_cfg: DataConfig) -> list:
    steps: list = []
    if data_cfg.columns:
        steps.append(TypeStep(data_cfg.columns, data_cfg.options.na_values))
    steps += [RuleStep(column, rules) for column, rules in data_cfg.clean.items()]
    return steps


def imputation(data_cfg: DataConfig) -> dict[str, dict[str, Any]]:
    """column -> {"strategy": ..., "fill_value": ...} for columns with an `impute` rule."""
    return {c: {"strategy": r.impute, "fill_value": r.fill_value} for c, r in data_cfg.clean.items() if r.impute}
