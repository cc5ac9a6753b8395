"""README's command reference, generated from the argparse parser so the two cannot drift.

`python -m pipeline.cli_reference README.md` (or `make docs`) rewrites the block between the markers;
`--check` exits 1 when it is stale, and a unit test does the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

START = "<!-- cli-reference: generated from pipeline/cli.py by `make docs`; edit the parser, not this block -->"
END = "<!-- /cli-reference -->"


METAVARS = {"output": "URI", "registry": "URI", "data": "URI", "input": "URI", "storage": "URI", "model": "URI",
            "mlflow_uri": "URI", "config": "FILE", "serve_config": "FILE", "address": "HOST:PORT", "host": "HOST",
            "format": "FORMAT", "tasks": "TASK", "run_id": "ID", "name": "NAME", "candidate": "NAME", "schedule": "NAME",
            "schedules": "LIST", "optimizers": "LIST"}


def subcommands(parser: argparse.ArgumentParser, prefix: str = "pipeline"):
    """(command line, parser, help) of every subcommand, in the order the parser declares them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub, helps.get(name) or ""


def argument(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{(action.metavar or action.dest).upper()}`" + (" (optional)" if action.nargs == "?" else "")
    flag = action.option_strings[-1]
    if action.nargs == 0:
        return f"`{flag}`"
    metavar = (action.metavar or METAVARS.get(action.dest) or ("NAME" if action.choices else None)
               or {int: "N", float: "X"}.get(action.type, "VALUE"))
    value = " ".join(metavar) if isinstance(metavar, tuple) else f"{metavar} ..." if action.nargs in ("+", "*") else metavar
    return f"`{flag} {value}`"


def meaning(action: argparse.Action) -> str:
    parts = [action.help or ""]
    if action.choices:
        parts.append("one of: " + ", ".join(f"`{c}`" for c in action.choices))
    if action.option_strings and action.nargs != 0 and action.default not in (None, argparse.SUPPRESS, []):
        parts.append(f"default `{action.default}`")
    if action.required and action.option_strings:
        parts.append("required")
    return "; ".join(p for p in parts if p).replace("|", "\\|")


def reference(parser: argparse.ArgumentParser | None = None) -> str:
    from pipeline.cli import build_parser

    parser = parser or build_parser()
    lines = []
    for command, sub, help_text in subcommands(parser):
        lines += [f"#### `{command}`", "", help_text[:1].upper() + help_text[1:] + ".", "", "| argument | meaning |", "| --- | --- |"]
        lines += [f"| {argument(a)} | {meaning(a)} |" for a in sub._actions if not isinstance(a, argparse._HelpAction)]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def block(text: str) -> tuple[int, int]:
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"the command reference markers are missing: add {START} and {END}")
    return start + len(START), end


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("readme", type=Path)
    args.add_argument("--check", action="store_true", help="exit 1 when the reference is stale, change nothing")
    opts = args.parse_args(argv)
    text = opts.readme.read_text()
    start, end = block(text)
    updated = text[:start] + "\n" + reference() + text[end:]
    if opts.check:
        if updated != text:
            print(f"{opts.readme}: the command reference is stale; run `make docs`", file=sys.stderr)
            return 1
        return 0
    opts.readme.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
