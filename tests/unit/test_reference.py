"""README's generated references are the code's: a flag or config key added, renamed or re-documented
without `make docs` fails here."""

import argparse

from pipeline.cli import build_parser
from pipeline.reference import END, START, reference, subcommands, updated
from tests.conftest import REPO


def test_readme_command_and_config_references_match_the_code(monkeypatch):
    monkeypatch.delenv("PIPELINE_TASKS", raising=False)  # the built-in tasks only
    text = (REPO / "README.md").read_text()
    assert updated(text) == text, "README's command or configuration reference is stale: run `make docs`"


def test_the_config_reference_lists_every_key_of_every_task():
    from pipeline.reference import config_reference
    from pipeline.tasks import load_config, task_names

    generated = config_reference()
    for name in task_names():
        def keys(raw, prefix=""):
            for key, value in raw.items():
                if isinstance(value, dict) and value and key not in ("schema", "clean", "space", "grid", "models", "datetime_formats"):
                    yield from keys(value, f"{prefix}{key}.")
                else:
                    yield prefix + key
        for key in keys(load_config(name).model_dump(by_alias=True)):
            if key != "task":
                assert f"| `{key}` |" in generated, (name, key)


def test_the_reference_lists_every_subcommand_and_option():
    parser = build_parser()
    generated = reference(parser)
    for command, sub, _ in subcommands(parser):
        assert f"#### `{command}`" in generated
        for action in sub._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert f"`{action.option_strings[-1]}" in generated.split(f"#### `{command}`")[1].split("####")[0], action.dest
    assert START != END
