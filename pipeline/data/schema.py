"""Declared column types: checking a source against them, and coercing raw values row by row.

Types: int, float, string, category (a string used as a categorical feature), bool, datetime.
A whole source that lacks a column or holds the wrong type fails at once with one message listing
every problem; a single value that cannot be coerced sends its row to quarantine instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config import NUMERIC_TYPES as NUMERIC
from pipeline.errors import DataError


def arrow_kind(arrow_type) -> str:
    import pyarrow as pa

    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "float"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return "datetime"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_dictionary(arrow_type):
        return "string"
    return str(arrow_type)


def compatible(declared: str, found: str) -> bool:
    """Whether a typed column (Parquet, JSON) can hold the declared type without guessing."""
    if found == "string":
        return True  # text is coerced per value; bad values are quarantined, not fatal
    if found == "text":
        return declared in ("string", "category")  # CSV column in which no value parses as declared
    if declared in ("string", "category"):
        return found in ("int", "float", "bool", "string")
    if declared == "float":
        return found in ("int", "float")
    if declared == "int":
        return found in ("int", "float")  # floats holding whole numbers; fractions are quarantined
    return declared == found


def check_columns(source: str, columns: dict[str, str], schema: dict[str, str]) -> None:
    """`columns`: name -> found kind. Raises one DataError listing missing and mistyped columns."""
    missing = [c for c in schema if c not in columns]
    mistyped = [f"{c} (declared {t}, found {columns[c]})" for c, t in schema.items()
                if c in columns and not compatible(t, columns[c])]
    problems = []
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if mistyped:
        problems.append(f"mistyped column(s): {', '.join(mistyped)}")
    if problems:
        raise DataError(f"{source} does not match the declared schema: {'; '.join(problems)} "
                        f"(columns found: {', '.join(columns) or 'none'})")


def normalise_text(values: pd.Series, na_values: set[str]) -> pd.Series:
    """Strips whitespace; empty strings and `na_values` (e.g. "?") become missing."""
    text = values.astype("string").str.strip()
    return text.mask(text.isin(na_values) | (text == ""))


def coerce(values: pd.Series, kind: str, na_values: set[str]) -> tuple[pd.Series, np.ndarray]:
    """(coerced values, mask of values present but not coercible)."""
    if kind in NUMERIC and pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        present = values.notna().to_numpy()
        out = values.astype("float64")
    else:
        text = normalise_text(values, na_values) if not pd.api.types.is_bool_dtype(values) else values
        present = text.notna().to_numpy()
        if kind in ("string", "category"):
            return text.astype("string"), np.zeros(len(values), bool)
        if kind in NUMERIC:
            out = pd.to_numeric(text, errors="coerce").astype("float64")
        elif kind == "bool":
            lowered = text.astype("string").str.lower()
            out = lowered.map({"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False})
            return out.astype("boolean"), present & out.isna().to_numpy()
        else:  # datetime
            out = pd.to_datetime(text, errors="coerce", utc=True)
            return out, present & out.isna().to_numpy()
    bad = present & ~np.isfinite(out.to_numpy(dtype="float64", na_value=np.nan))
    if kind == "int":
        whole = np.isfinite(out.to_numpy(dtype="float64", na_value=np.nan))
        fractional = whole & (np.mod(out.fillna(0).to_numpy(), 1) != 0)
        bad |= fractional
    return out, bad


def as_text(values: pd.Series) -> pd.Series:
    """Values as text for matching config lists: whole numbers without a trailing ".0"."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype("float64")
        whole = numbers.notna() & (numbers % 1 == 0)
        text = numbers.astype("string")
        text[whole] = numbers[whole].astype("int64").astype("string")
        return text
    return values.astype("string")
