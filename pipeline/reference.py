"""README's generated references, so they cannot drift from the code: the command line (from the
argparse parser) and the configuration (from the typed config classes, with each task's defaults).

`python -m pipeline.reference README.md` (or `make docs`) rewrites the blocks between their markers;
`--check` exits 1 when one is stale, and a unit test does the same.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

START = "<!-- cli-reference: generated from pipeline/cli.py by `make docs`; edit the parser, not this block -->"
END = "<!-- /cli-reference -->"
CONFIG_START = "<!-- config-reference: generated from pipeline/config.py and the task configs by `make docs` -->"
CONFIG_END = "<!-- /config-reference -->"
TASK_SECTIONS = ("data.options", "features", "model")  # typed per task; the rest every task shares


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


def type_name(annotation: Any) -> str:
    """A config field's type in words: `int`, `list of str`, `a | b`, `str or null`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        if all(isinstance(a, type) and issubclass(a, BaseModel) for a in args):
            return "section"
        kept = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(kept) + (" or null" if len(kept) < len(args) else "")
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation)).replace("Positive", "positive ").replace("NonNegative", "non-negative ")


def comments(cls: type) -> dict[str, str]:
    """Each field's trailing comment in its class's source (`name: type  # comment`)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if issubclass(klass, BaseModel) and klass.__module__.startswith("pipeline"):
            for match in re.finditer(r"^    (\w+): [^\n#]*#\s?(.*)$", inspect.getsource(klass), re.M):
                if not match.group(2).startswith("type:"):
                    out[match.group(1)] = match.group(2).strip()
    return out


def yaml_comments(path: Path) -> dict[str, str]:
    """Dotted key -> the trailing comment of its line in a YAML file (block mappings, 2-space indents)."""
    out, stack = {}, []
    for line in path.read_text().splitlines():
        match = re.match(r"^( *)([\w@.]+):(.*?)(?:\s+#\s?(.*))?$", line)
        if not match or line.lstrip().startswith("#"):
            continue
        depth = len(match.group(1)) // 2
        stack = stack[:depth] + [match.group(2)]
        if match.group(4):
            out[".".join(stack)] = match.group(4).strip()
    return out


def section_of(annotation: Any) -> type | None:
    """The config section class a field holds (directly, or as the values of a mapping)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is dict and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return args[1]
    return None


def config_rows(cls: type, defaults: Any, prefix: str = "", described: dict[str, str] | None = None) -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, meaning) of every field of `cls`, sections expanded; a meaning is the
    field's comment in its class, else in the defaults' YAML (`described`)."""
    rows, notes, described = [], comments(cls), described or {}
    for name, field in cls.model_fields.items():
        key = prefix + (field.alias or name)
        annotation = field.annotation
        value = defaults.get(field.alias or name, field.default) if isinstance(defaults, dict) else field.default
        inner = section_of(annotation)
        if inner is not None and typing.get_origin(annotation) is dict:  # e.g. data.clean.<column>
            rows.append((key, "mapping", format_default(value), notes.get(name) or described.get(key, "")))
            rows += config_rows(inner, {}, f"{key}.<{'column' if 'clean' in key else 'name'}>.", described)
        elif inner is not None and inner.model_fields:
            rows += config_rows(inner, value if isinstance(value, dict) else {}, key + ".", described)
        else:
            rows.append((key, type_name(annotation), format_default(value), notes.get(name) or described.get(key, "")))
    return rows


def format_default(value: Any) -> str:
    from pydantic_core import PydanticUndefined

    if value is PydanticUndefined or value is None and False:
        return ""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    text = "null" if value is None else str(value).replace("'", "") if not isinstance(value, bool) else str(value).lower()
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"`{text}`".replace("|", "\\|")


def config_reference() -> str:
    """Every config key: the shared ones once (with defaults.yaml's values), then each task's typed
    `data.options`, `features` and `model` with that task's defaults (embedded data's where they differ)."""
    from pipeline.tasks import DEFAULTS, default_config, defaults_file, get_task, read_yaml, task_names

    def table(rows) -> list[str]:
        return ["| key | type | default | meaning |", "| --- | --- | --- | --- |",
                *[f"| `{k}` | {t} | {d} | {m.replace('|', chr(92) + '|')} |" for k, t, d, m in rows], ""]

    first = task_names()[0]
    shared = [r for r in config_rows(get_task(first).config_class, read_yaml(DEFAULTS), "", yaml_comments(DEFAULTS))
              if r[0] != "task" and not r[0].startswith(TASK_SECTIONS)]
    lines = ["#### Every task (defaults.yaml; a task's YAML changes some)", "", *table(shared)]
    for name in task_names():
        described = {k.removeprefix("embedded."): v for k, v in yaml_comments(defaults_file(name)).items()}
        rows = config_rows(get_task(name).config_class, default_config(name), "", described)
        lines += [f"#### `{name}` ({name}.yaml)", "", *table(r for r in rows if r[0].startswith(TASK_SECTIONS))]
    return "\n".join(lines).rstrip() + "\n"


def replace_block(text: str, start_marker: str, end_marker: str, content: str) -> str:
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise SystemExit(f"the reference markers are missing: add {start_marker} and {end_marker}")
    return text[:start + len(start_marker)] + "\n" + content + text[end:]


def updated(text: str) -> str:
    """README with both generated blocks rewritten."""
    return replace_block(replace_block(text, START, END, reference()), CONFIG_START, CONFIG_END, config_reference())


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("readme", type=Path)
    args.add_argument("--check", action="store_true", help="exit 1 when a reference is stale, change nothing")
    opts = args.parse_args(argv)
    text = opts.readme.read_text()
    new = updated(text)
    if opts.check:
        if new != text:
            print(f"{opts.readme}: a generated reference is stale; run `make docs`", file=sys.stderr)
            return 1
        return 0
    opts.readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
