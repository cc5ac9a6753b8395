"""Dirty CSV files for property-based tests, and a plain-Python oracle of the reader and the rules.

The generator writes what real exports get wrong: missing values, repeated and missing keys, integers
beyond 2**53 and int64, mixed date formats, stray and doubled quotes, embedded delimiters and
newlines, CRLF and blank lines, wrong field counts and invalid UTF-8. The oracle states the
documented dialect and rules without Arrow, pandas or Ray: Python's `csv` module reads each physical
line, and every rule is a few lines of plain Python.
"""

from __future__ import annotations

import csv
import datetime as dt
import re

from hypothesis import strategies as st

COLUMNS = ["id", "age", "score", "when", "city"]
SCHEMA = {"id": "int", "age": "int", "score": "float", "when": "datetime", "city": "string"}
NA_VALUES = ["?"]
ALLOWED_CITIES = ["Paris", "Lyon"]
DATETIME_FORMATS = ("ISO8601", "%Y-%m-%d %H:%M:%S", "%Y/%m/%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d/%m/%Y %H:%M",
                    "%m/%d/%Y %H:%M", "%d-%b-%Y", "%d %b %Y", "%b %d %Y", "%Y%m%d")

GOOD = {  # most values are fine, so that kept rows, duplicates and rules all get exercised
    "id": ["1", "2", "3", "4", "5", "6"],
    "age": ["30", "45", "120", "1"],
    "score": ["0.5", "1", "-2.5e3"],
    "when": ["2021-01-13", "2021-02-01"],
    "city": ["Paris", "Lyon"],
}
BAD = {
    "id": ["01", "+2", "2.0", "9007199254740993", "9007199254740992", "9223372036854775807", "9223372036854775808",
           "-5", "abc", "", "?", " 7 ", "1e3"],
    "age": ["0", "-1", "121", "45.0", "45.5", "abc", "", "?", "1e2", " 33"],
    "score": ["nan", "inf", "", "?", "x", ".5", "5."],
    "when": ["13/01/2021", "03/04/2021", "04/03/2021", "2021-13-45", "", "?", "soon"],
    "city": ["Nice", 'Pa"ris', "Lyon,Nice", "", "?", "Saint-Étienne", "a\nb", '""', "x,y,z"],
}


@st.composite
def dirty_lines(draw) -> list[bytes]:
    """Data lines (with their line ends) of a 5-column file."""
    lines = []
    for _ in range(draw(st.integers(0, 40))):
        fields = [draw(st.sampled_from(GOOD[c] if draw(st.integers(0, 4)) else BAD[c])) for c in COLUMNS]
        rendered = []
        for value in fields:
            style = draw(st.sampled_from(["plain"] * 16 + ["quoted", "quoted", "stray"]))
            if style == "quoted":
                value = '"' + value.replace('"', '""') + '"'
            elif style == "stray":
                value = '"' + value
            rendered.append(value)
        shape = draw(st.sampled_from(["ok"] * 18 + ["short", "long"]))
        if shape == "short":
            rendered = rendered[:-1]
        elif shape == "long":
            rendered.append("extra")
        raw = ",".join(rendered).encode()
        if draw(st.integers(0, 29)) == 0:  # invalid UTF-8 somewhere in the line
            at = draw(st.integers(0, len(raw)))
            raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80"])) + raw[at:]
        end = draw(st.sampled_from([b"\n"] * 4 + [b"\r\n"]))
        lines.append(raw + end)
        if draw(st.integers(0, 14)) == 0:
            lines.append(draw(st.sampled_from([b"\n", b"\r\n"])))  # a blank line
    if lines and draw(st.booleans()):
        lines[-1] = lines[-1].rstrip(b"\r\n")  # no line end at the end of the file
    return lines


HEADER = (",".join(COLUMNS) + "\n").encode()


def split_files(lines: list[bytes], parts: int) -> list[bytes]:
    """The lines cut into `parts` files (in order), each with the header and one valid first row (so
    that no file looks like a wrongly declared schema: that is a whole-file error, tested elsewhere)."""
    last_open = bool(lines) and not lines[-1].endswith(b"\n")
    if last_open:
        lines = lines[:-1] + [lines[-1] + b"\n"]
    size = -(-len(lines) // parts) if lines else 0
    files = [HEADER + f"{100 + i},30,0.5,,Paris\n".encode() + b"".join(lines[i * size:(i + 1) * size])
             for i in range(parts)]
    if last_open:
        files[-1] = files[-1][:-1]  # only the last file may lack its final line end
    return files


# --- the oracle --------------------------------------------------------------------------------------

def oracle_records(files: list[bytes]) -> list[tuple[int, int, list[str] | None]]:
    """(file index, record index, fields or None when malformed) for every record, in order."""
    out = []
    for file_index, data in enumerate(files):
        lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")[1:]
        record = 0
        for raw in lines:
            raw = raw[:-1] if raw.endswith(b"\r") else raw
            if not raw:
                continue  # blank lines are not records
            fields = None
            if b"\r" not in raw:
                try:
                    fields = next(csv.reader([raw.decode("utf-8")]))
                except UnicodeDecodeError:
                    fields = None
            out.append((file_index, record, fields if fields is not None and len(fields) == len(COLUMNS) else None))
            record += 1
    return out


NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def present(value: str) -> str | None:
    value = value.strip()
    return None if value == "" or value in NA_VALUES else value


def as_float(value: str) -> float | None:
    if not NUMBER.fullmatch(value):
        return None
    number = float(value)
    return number if abs(number) != float("inf") else None


def as_int(value: str) -> int | None:
    if re.fullmatch(r"[+-]?[0-9]+", value):
        number = int(value)
        return number if -(2**63) <= number < 2**63 else None
    number = as_float(value)
    return int(number) if number is not None and number == int(number) and abs(number) <= 2**53 else None


def parses_as(value: str, fmt: str) -> bool:
    try:
        dt.datetime.strptime(value, "%Y-%m-%d" if fmt == "ISO8601" else fmt)
        return True
    except ValueError:
        return False


def oracle_datetime_format(records) -> str:
    values = [present(fields[3]) for _, _, fields in records if fields is not None]
    values = [v for v in values if v is not None]
    counts = {fmt: sum(parses_as(v, fmt) for v in values) for fmt in DATETIME_FORMATS}
    return max(DATETIME_FORMATS, key=lambda fmt: (counts[fmt], -DATETIME_FORMATS.index(fmt)))


def oracle_reasons(files: list[bytes]) -> dict[tuple[int, int], str]:
    """(file index, record index) -> reason ("" kept), by the rules: types in schema order, then
    age in (0, 120], score required, city allowed; then later copies of a present id are duplicates."""
    records = oracle_records(files)
    when_format = oracle_datetime_format(records)
    reasons, ids = {}, {}
    for file_index, record, fields in records:
        key = (file_index, record)
        if fields is None:
            reasons[key] = "malformed_row"
            continue
        value = dict(zip(COLUMNS, (present(f) for f in fields)))
        ident = as_int(value["id"]) if value["id"] is not None else None
        age = as_int(value["age"]) if value["age"] is not None else None
        reason = ""
        if value["id"] is not None and ident is None:
            reason = "type:id"
        elif value["age"] is not None and age is None:
            reason = "type:age"
        elif value["score"] is not None and as_float(value["score"]) is None:
            reason = "type:score"
        elif value["when"] is not None and not parses_as(value["when"], when_format):
            reason = "type:when"
        elif age is not None and not (0 < age <= 120):
            reason = "range:age"
        elif value["score"] is None:
            reason = "missing:score"
        elif value["city"] is not None and value["city"] not in ALLOWED_CITIES:
            reason = "allowed:city"
        elif ident is not None:
            if ident in ids:
                reason = "duplicate"
            ids.setdefault(ident, key)
        reasons[key] = reason
    return reasons
