"""Declared column types: checking a source against them, and coercing raw values row by row.

Types: int, float, string, category (a string used as a categorical feature), bool, datetime.
A whole source that lacks a column or holds the wrong type fails at once with one message listing
every problem; a single value that cannot be coerced sends its row to quarantine instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config import NUMERIC_TYPES as NUMERIC
from pipeline.data.features import to_numbers
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


INT64_MAX = 2**63 - 1
EXACT_FLOAT_INT = 2**53  # beyond it a float no longer holds every whole number
INTEGER_LITERAL = r"[+-]?[0-9]+"
DATETIME_FORMATS = ("ISO8601", "%Y-%m-%d %H:%M:%S", "%Y/%m/%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d/%m/%Y %H:%M",
                    "%m/%d/%Y %H:%M", "%d-%b-%Y", "%d %b %Y", "%b %d %Y", "%Y%m%d")  # tried in this order


def coerce(values: pd.Series, kind: str, na_values: set[str], datetime_format: str | None = None) -> tuple[pd.Series, np.ndarray]:
    """(coerced values, mask of values present but not coercible). `int` values stay exact (Int64);
    `datetime` values are read with one `datetime_format` (per column, not per batch)."""
    if pd.api.types.is_bool_dtype(values):
        text = values
    elif kind in NUMERIC and pd.api.types.is_numeric_dtype(values):
        return coerce_number(values, kind)
    else:
        text = normalise_text(values, na_values)
    present = text.notna().to_numpy()
    if kind in ("string", "category"):
        return text.astype("string"), np.zeros(len(values), bool)
    if kind == "int":
        return parse_int(text.astype("string"), present)
    if kind == "float":
        out = pd.Series(to_numbers(text), index=text.index)
        return out, present & ~np.isfinite(out.to_numpy(dtype="float64", na_value=np.nan))
    if kind == "bool":
        lowered = text.astype("string").str.lower()
        out = lowered.map({"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False})
        return out.astype("boolean"), present & out.isna().to_numpy()
    out = parse_datetime(text, datetime_format or "ISO8601")
    return out, present & out.isna().to_numpy()


def coerce_number(values: pd.Series, kind: str) -> tuple[pd.Series, np.ndarray]:
    """An already numeric column (Parquet, JSON): ints stay exact; a float must be finite (and whole, for int)."""
    if kind == "int" and pd.api.types.is_integer_dtype(values):
        return values.astype("Int64"), np.zeros(len(values), bool)  # uint64 beyond int64 fails the cast: a clear error
    numbers = values.astype("float64")
    finite = np.isfinite(numbers.to_numpy(dtype="float64", na_value=np.nan))
    bad = values.notna().to_numpy() & ~finite
    if kind == "float":
        return numbers, bad
    return whole_numbers(numbers, bad)


def whole_numbers(numbers: pd.Series, bad: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    """Floats that hold whole numbers exactly (|x| <= 2**53) as Int64; others are bad."""
    raw = numbers.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(raw) & (np.mod(np.nan_to_num(raw), 1) == 0) & (np.abs(raw) <= EXACT_FLOAT_INT)
    bad = bad | (~np.isnan(raw) & ~ok)
    out = pd.array(np.where(ok, raw, 0).astype(np.int64), dtype="Int64")
    out[~ok] = pd.NA
    return pd.Series(out, index=numbers.index), bad


def parse_int(text: pd.Series, present: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    """Integer literals exactly (any size within int64); other numbers only when whole and exact as floats."""
    literal = text.str.fullmatch(INTEGER_LITERAL).to_numpy(dtype=bool, na_value=False)
    digits = text.str.lstrip("+-").str.lstrip("0").str.len().to_numpy(dtype=np.int64, na_value=0)
    in_range = literal & (digits <= 18)  # certainly within int64: exact through Arrow's cast
    values = np.zeros(len(text), np.int64)
    if in_range.any():
        import pyarrow as pa

        literals = pa.array(text[in_range].str.removeprefix("+"))  # Arrow reads "-5", not "+5"
        values[in_range] = literals.cast(pa.int64()).to_numpy(zero_copy_only=False)
    out = pd.arrays.IntegerArray(values, ~in_range)  # missing where no in-range literal was read
    for i in np.flatnonzero(literal & ~in_range):  # 19+ digits: rare, checked against int64's bounds exactly
        number = int(text.iloc[i])
        if -INT64_MAX - 1 <= number <= INT64_MAX:
            out[i] = number
    bad = present & literal & pd.isna(out)
    other = present & ~literal
    if other.any():
        numbers, other_bad = whole_numbers(pd.Series(to_numbers(text[other]), index=text.index[other]),
                                           np.zeros(int(other.sum()), bool))
        out[other] = numbers.array
        bad[other] = other_bad | numbers.isna().to_numpy()
    return pd.Series(out, index=text.index), bad


def parse_datetime(text: pd.Series, datetime_format: str) -> pd.Series:
    return pd.to_datetime(text, errors="coerce", utc=True, format=datetime_format)


def datetime_format_counts(values: pd.Series, na_values: set[str], formats=DATETIME_FORMATS) -> dict[str, int]:
    """How many present values each candidate format reads: summed over blocks, this decides one
    format per column whatever the blocks."""
    text = normalise_text(values, na_values).dropna()
    return {fmt: int(parse_datetime(text, fmt).notna().sum()) for fmt in formats}


def best_datetime_format(counts: dict[str, int]) -> str:
    """The format that reads the most values; ties go to the earlier candidate."""
    return max(DATETIME_FORMATS, key=lambda fmt: (counts.get(fmt, 0), -DATETIME_FORMATS.index(fmt)))


def as_text(values: pd.Series) -> pd.Series:
    """Values as text for matching config lists: whole numbers without a trailing ".0"."""
    if pd.api.types.is_integer_dtype(values):
        return values.astype("string")  # exact, however large
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype("float64")
        whole = numbers.notna() & (numbers % 1 == 0)
        text = numbers.astype("string")
        text[whole] = numbers[whole].astype("int64").astype("string")
        return text
    return values.astype("string")


def dataset_schema(ds):
    """`ds`'s schema (Ray Data's wrapper of Arrow's). For lazy data Ray Data finds it by running the plan
    up to one row, yet with a task per core at once: it reads and cleans as many blocks as there are
    cores to keep one. Here that run gets one CPU, so a streamed source's look costs a block or two."""
    known = ds.schema(fetch_if_missing=False)
    if known is not None:
        return known
    options = ds.context.execution_options  # shared by the datasets derived from `ds`: restored below
    limits = options.resource_limits
    options.resource_limits = limits.copy(cpu=1)
    try:
        return ds.schema()
    finally:
        options.resource_limits = limits


def dataset_columns(ds) -> list[str]:
    return list(dataset_schema(ds).names)
