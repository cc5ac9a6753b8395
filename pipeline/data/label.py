"""Rule-based labeling functions combined by majority vote, with abstain.

    data:
      labeling:
        target: label                 # column the vote writes
        default: landscape            # when every function abstains (else the row is quarantined)
        functions:
          - {name: animal_photo, type: keyword, column: photo, keywords: [animal], label: animal}
          - {name: sunset, type: regex, column: photo, pattern: "sun(set|rise)", label: landscape}
          - {name: rich, type: threshold, column: capital_gain, op: gt, value: 5000, label: ">50K"}
          - {name: income, type: map, column: income, mapping: {"<=50K.": "<=50K", ">50K.": ">50K"}}

Each function votes a label or abstains; the most voted label wins; a tie between different labels
quarantines the row as `label_conflict`, no vote and no default as `unlabeled`. The report gives
each function's coverage (share of rows it voted on) and conflicts (share of rows where it voted
and another function voted differently).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from pipeline.config import LabelingConfig, LabelingFunction
from pipeline.data.schema import as_text

OPS = {"gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal, "eq": np.equal}
VOTE_PREFIX = "_lf_"  # per-function outcome columns: 0 abstained, 1 voted, 2 voted against another vote


def vote(fn: LabelingFunction, batch: pd.DataFrame) -> pd.Series:
    """One function's votes: a label per row, <NA> where it abstains."""
    values = batch[fn.column]
    if fn.type == "map":
        return as_text(values).map(fn.mapping).astype("string")
    if fn.type == "threshold":
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore"):
            hit = OPS[fn.op](numbers, fn.value)
    else:
        text = values.astype("string")
        pattern = "|".join(re.escape(k) for k in fn.keywords) if fn.type == "keyword" else fn.pattern
        hit = text.str.contains(pattern, case=fn.case_sensitive, regex=True).to_numpy(dtype=bool, na_value=False)
    return pd.Series(np.where(hit, fn.label, None), index=batch.index, dtype="string")


class LabelingStep:
    def __init__(self, labeling: LabelingConfig):
        self.functions = labeling.functions
        self.names = labeling.names
        self.target = labeling.target
        self.default = labeling.default

    def __call__(self, batch: pd.DataFrame):
        n = len(batch)
        votes = pd.DataFrame({name: vote(fn, batch) for name, fn in zip(self.names, self.functions)}, index=batch.index)
        labels = pd.unique(votes.stack().dropna().astype(str)) if n else []
        codes = np.full(votes.shape, -1, dtype=np.int32)
        for k, label in enumerate(labels):
            codes[(votes == label).to_numpy(dtype=bool, na_value=False)] = k
        counts = np.stack([(codes == k).sum(axis=1) for k in range(len(labels))], axis=1) if len(labels) else np.zeros((n, 0), int)
        top = counts.max(axis=1) if len(labels) else np.zeros(n, int)
        winners = (counts == top[:, None]).sum(axis=1) if len(labels) else np.zeros(n, int)
        chosen = np.array(labels, dtype=object)[counts.argmax(axis=1)] if len(labels) else np.full(n, None, object)
        result = np.where(top > 0, chosen, self.default if self.default is not None else None)
        reasons = np.full(n, "", dtype=object)
        tie = (top > 0) & (winners > 1)
        result[tie] = None
        reasons[tie] = "label_conflict"
        reasons[(top == 0) & (self.default is None)] = "unlabeled"
        batch[self.target] = pd.array(result, dtype="string")
        # Per-function outcome, for coverage and conflicts in the data report.
        distinct = (codes[:, :, None] != codes[:, None, :]) & (codes[:, :, None] >= 0) & (codes[:, None, :] >= 0)
        conflicted = distinct.any(axis=2)
        for j, name in enumerate(self.names):
            batch[VOTE_PREFIX + name] = np.where(codes[:, j] < 0, 0, np.where(conflicted[:, j], 2, 1)).astype(np.int8)
        return batch, reasons


def labeling_stats(partials: list[dict], names: list[str]) -> dict[str, dict[str, float]]:
    rows = sum(p["rows"] for p in partials) or 1
    return {name: {"coverage": sum(p[name][0] for p in partials) / rows, "conflicts": sum(p[name][1] for p in partials) / rows}
            for name in names}


def labeling_partial(batch: pd.DataFrame, names: list[str]) -> dict:
    out: dict = {"rows": len(batch)}
    for name in names:
        col = batch[VOTE_PREFIX + name].to_numpy()
        out[name] = [int((col > 0).sum()), int((col == 2).sum())]
    return out
