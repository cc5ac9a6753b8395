"""README's command reference is the parser's: a flag added, renamed or re-documented in pipeline/cli.py
without `make docs` fails here."""

import argparse

from pipeline.cli import build_parser
from pipeline.cli_reference import END, START, block, reference, subcommands
from tests.conftest import REPO


def test_readme_command_reference_matches_the_parser(monkeypatch):
    monkeypatch.delenv("PIPELINE_TASKS", raising=False)  # the built-in tasks only
    text = (REPO / "README.md").read_text()
    start, end = block(text)
    assert text[start:end] == "\n" + reference(), "README's command reference is stale: run `make docs`"


def test_the_reference_lists_every_subcommand_and_option():
    parser = build_parser()
    generated = reference(parser)
    for command, sub, _ in subcommands(parser):
        assert f"#### `{command}`" in generated
        for action in sub._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert f"`{action.option_strings[-1]}" in generated.split(f"#### `{command}`")[1].split("####")[0], action.dest
    assert START != END
