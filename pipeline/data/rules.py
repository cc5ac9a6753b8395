"""Per-column cleaning rules from config, compiled into row steps that name a reason per failure.

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

from pipeline.data.schema import NUMERIC, as_text, coerce, validate_schema
from pipeline.errors import ConfigError

RULE_KEYS = {"required", "impute", "fill_value", "range", "allowed", "regex"}
RANGE_OPS = {"gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal}
IMPUTE = ("mean", "median", "mode", "constant")
MALFORMED_COLUMN = "_malformed"  # set by the CSV reader on rows it could not parse


def validate_rules(data_cfg, extra_columns: set[str]) -> None:
    """Checks rule names and that every column a rule names is declared (or made by labeling)."""
    validate_schema(data_cfg.schema)
    known = set(data_cfg.schema) | extra_columns
    for column, rules in data_cfg.clean.items():
        if not isinstance(rules, dict):
            raise ConfigError(f"data.clean.{column} must be a mapping of rules")
        unknown = set(rules) - RULE_KEYS
        if unknown:
            raise ConfigError(f"data.clean.{column}: unknown rule(s) {sorted(unknown)}; known: {sorted(RULE_KEYS)}")
        if data_cfg.schema and column not in known:
            raise ConfigError(f"data.clean names column {column!r}, which is not in data.schema ({', '.join(data_cfg.schema)})")
        if "impute" in rules and rules["impute"] not in IMPUTE:
            raise ConfigError(f"data.clean.{column}.impute must be one of {IMPUTE}")
        if rules.get("impute") in ("mean", "median") and data_cfg.schema.get(column) not in NUMERIC:
            raise ConfigError(f"data.clean.{column}.impute={rules['impute']} needs a numeric column")
        if set(rules.get("range", {})) - set(RANGE_OPS):
            raise ConfigError(f"data.clean.{column}.range takes {sorted(RANGE_OPS)}")
        if "regex" in rules:
            try:
                re.compile(rules["regex"])
            except re.error as exc:
                raise ConfigError(f"data.clean.{column}.regex is not a valid pattern: {exc}") from None
    for column in data_cfg.dedup:
        if data_cfg.schema and column not in known:
            raise ConfigError(f"data.dedup names column {column!r}, which is not in data.schema")


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

    def __init__(self, column: str, rules: dict[str, Any]):
        self.column, self.rules = column, rules
        self.pattern = re.compile(rules["regex"]) if "regex" in rules else None

    def __call__(self, batch: pd.DataFrame):
        values = batch[self.column]
        present = values.notna().to_numpy()
        reasons = np.full(len(batch), "", dtype=object)
        if self.rules.get("required") and "impute" not in self.rules:
            reasons[~present] = f"missing:{self.column}"
        if "range" in self.rules:
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            ok = np.ones(len(batch), bool)
            for op, bound in self.rules["range"].items():
                with np.errstate(invalid="ignore"):
                    ok &= RANGE_OPS[op](numbers, bound)
            reasons[(reasons == "") & present & ~ok] = f"range:{self.column}"
        if "allowed" in self.rules:
            ok = as_text(values).isin([str(v) for v in self.rules["allowed"]]).to_numpy(dtype=bool, na_value=False)
            reasons[(reasons == "") & present & ~ok] = f"allowed:{self.column}"
        if self.pattern is not None:
            ok = values.astype("string").str.fullmatch(self.pattern).to_numpy(dtype=bool, na_value=False)
            reasons[(reasons == "") & present & ~ok] = f"regex:{self.column}"
        return batch, reasons


def rule_steps(data_cfg) -> list:
    steps: list = []
    if data_cfg.schema:
        steps.append(TypeStep(data_cfg.schema, data_cfg.options.get("na_values", [])))
    steps += [RuleStep(column, rules) for column, rules in data_cfg.clean.items()]
    return steps


def imputation(data_cfg) -> dict[str, dict[str, Any]]:
    """column -> {"strategy": ..., "fill_value": ...} for columns with an `impute` rule."""
    return {c: {"strategy": r["impute"], "fill_value": r.get("fill_value")} for c, r in data_cfg.clean.items() if "impute" in r}
