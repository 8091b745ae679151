"""Every command's --help: help text for every option, each default shown once; "did you mean" for
mistyped names (commands, choices, architectures, spaces, searchers)."""

from __future__ import annotations

import argparse
import re

import pytest

from hwnas import cli, cli_netadapt
from nas.searchers import study_directions
from search_spaces import SpecError, references, resolve_arch
from search_spaces.spaces import get_space
from search_spaces.suggest import close_matches, did_you_mean, unknown_name


def _commands():
    """(command words, parser) of every command and sub-command of `nas` and `netadapt`."""
    def walk(parser, words):
        yield words, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*words, name])

    for root in (cli.build_parser(), cli_netadapt.build_parser()):
        yield from walk(root, [root.prog])


COMMANDS = list(_commands())


@pytest.mark.parametrize("words,parser", COMMANDS, ids=[" ".join(w) for w, _ in COMMANDS])
def test_every_option_has_help_and_one_default(words, parser):
    assert issubclass(parser.formatter_class, cli.HelpFormatter), "the help would not show the defaults"
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help, f"{' '.join(words)} {name}: no help text"
        shown = parser._get_formatter()._get_help_string(action) % {**vars(action), "default": action.default,
                                                                     "prog": parser.prog}
        assert shown.count("default") <= 1, f"{' '.join(words)} {name}: {shown!r}"
        real_default = action.default not in (None, False, argparse.SUPPRESS)
        assert not real_default or "default" in shown, f"{' '.join(words)} {name}: default {action.default!r} not shown"
    assert "%(" not in text


def test_close_names_are_suggested():
    assert did_you_mean("mobilenetv3_smal", references.names()).startswith(" (did you mean 'mobilenetv3_small'")
    assert did_you_mean("resnet50", references.names()) == ""
    assert close_matches("RL", ["rl", "tpe"]) == ["rl"]
    message = unknown_name("searcher", "rll", ["rl", "tpe"])
    assert message == "unknown searcher 'rll' (did you mean 'rl'?); known: rl, tpe"


@pytest.mark.parametrize("call,hint", [
    (lambda: resolve_arch("mobilenetv3_larg"), "did you mean 'mobilenetv3_large'"),
    (lambda: references.get("mnasnet_a2"), "did you mean 'mnasnet_a1'"),
    (lambda: get_space("mobilenet3"), "did you mean 'mobilenetv3'"),
    (lambda: study_directions("evolutoin"), "did you mean 'evolution'"),
])
def test_library_errors_suggest_the_close_name(call, hint):
    with pytest.raises((SpecError, ValueError), match=re.escape(hint)):
        call()


@pytest.mark.parametrize("argv,hint", [
    (["serch"], "did you mean 'search'"),
    (["search", "--target-ms", "5", "--searcher", "evolutoin"], "did you mean 'evolution'"),
    (["search", "--target-ms", "5", "--space", "mobilenetv3_smal"], "did you mean 'mobilenetv3_small'"),
    (["arch", "show", "mobilenetv3_smal"], "did you mean 'mobilenetv3_small'"),
    (["search", "--target-like", "mnasnet_a2", "--run-dir", "unused"], "did you mean 'mnasnet_a1'"),
])
def test_cli_suggests_the_close_name(argv, hint, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert hint in err and err.strip().splitlines()[-1].startswith("nas"), err
    assert not (tmp_path / "unused").exists()
