"""The data report: what came in, what was kept, what was quarantined and why, and class balance."""

from __future__ import annotations

from typing import Any

from pipeline import storage


def format_report(report: dict[str, Any]) -> str:
    lines = [f"data report ({report['task']}, source: {report['source']})"]
    width = 28
    for key in ("rows_in", "rows_kept", "rows_quarantined"):
        lines.append(f"  {key:<{width}}{report[key]:>10,}")
    for reason, n in report.get("quarantined_by_reason", {}).items():
        lines.append(f"    {reason:<{width - 2}}{n:>10,}")
    if report.get("nulls"):
        nulls = {k: v for k, v in report["nulls"].items() if v}
        lines.append("  nulls per column (before cleaning): " + (", ".join(f"{k}={v}" for k, v in nulls.items()) or "none"))
    if report.get("datetime_formats"):
        lines.append("  datetime formats: " + ", ".join(f"{k}={v}" for k, v in report["datetime_formats"].items()))
    if report.get("splits"):
        lines.append("  " + "  ".join(f"{k}={v:,}" for k, v in report["splits"].items()))
    for split, balance in report.get("class_balance", {}).items():
        total = sum(balance.values()) or 1
        shown = ", ".join(f"{c}: {n} ({100 * n / total:.0f}%)" for c, n in balance.items())
        lines.append(f"  class balance {split:<6} {shown}")
    if report.get("labeling"):
        for name, stats in report["labeling"].items():
            lines.append(f"  labeling {name}: coverage {stats['coverage']:.1%}, conflicts {stats['conflicts']:.1%}")
    if report.get("quarantine_path"):
        lines.append(f"  quarantine (rows with their reason): {report['quarantine_path']}")
    return "\n".join(lines)


def write_report(report: dict[str, Any], output_dir: str) -> str:
    uri = storage.join(output_dir, "data_report.json")
    storage.write_json(uri, report)
    return uri
