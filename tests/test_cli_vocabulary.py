"""One vocabulary (issue 26 item 10): the options ``distilmarco --help`` lists mean the same, and
are spelled the same, in every command; old spellings still work for a release, hidden, with a
note; ``--json`` is a flag everywhere; ``--version``; every ``--help`` shows a real example."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
import typer

import distilmarco
from distilmarco.cli import app, main
from distilmarco.cli.app import VOCABULARY, rewrite_aliases

OLD_SPELLINGS = ("--db", "-d", "--field", "--text-column", "--id-field", "--top", "--k")


def _commands() -> list[tuple[tuple[str, ...], Any]]:
    found: list[tuple[tuple[str, ...], Any]] = []

    def walk(path: tuple[str, ...], cmd: Any) -> None:
        found.append((path, cmd))
        if _is_group(cmd):
            for name, sub in cmd.commands.items():
                walk((*path, name), sub)

    walk((), typer.main.get_command(app))
    return found


def _is_group(cmd: Any) -> bool:  # Typer's own copy of Click: no isinstance against click's
    return hasattr(cmd, "commands")


COMMANDS = _commands()
LEAVES = [(p, c) for p, c in COMMANDS if not _is_group(c)]


def test_top_level_help_lists_the_vocabulary(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    for concept, names in VOCABULARY.items():
        assert f"{' '.join(names)} = {concept}" in shown


@pytest.mark.parametrize(("path", "cmd"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_each_command_spells_each_concept_the_same(capsys, path: tuple[str, ...], cmd: Any) -> None:  # type: ignore[no-untyped-def]
    assert main([*path, "--help"]) == 0
    shown = capsys.readouterr().out
    for param in cmd.params:
        if getattr(param, "param_type_name", "") != "option":
            continue
        names = set(param.opts) | set(param.secondary_opts)
        for concept, spelled in VOCABULARY.items():
            # an option that takes a name of the vocabulary has exactly that concept's names
            if concept == "engine":
                continue
            if names & set(spelled):
                assert names == set(spelled), f"{' '.join(path)}: {sorted(names)} for {concept}"
        assert not names & set(OLD_SPELLINGS), f"{' '.join(path)} shows an old name {names}"
        if "--json" in names:
            assert param.is_flag, f"{' '.join(path)}: --json must be a flag"
        if "--top-k" in names or "-k" in names:
            assert "-k" in names and "--top-k" in names
    for old in OLD_SPELLINGS:
        assert f"{old} " not in shown and f"{old}," not in shown


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[" ".join(p) or "-" for p, _ in COMMANDS])
def test_every_help_shows_one_real_example(capsys, path: tuple[str, ...], cmd: Any) -> None:  # type: ignore[no-untyped-def]
    assert main([*path, "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    epilog = (cmd.epilog or "").removeprefix("\b\n")  # \b: Click keeps the line unwrapped
    assert epilog.startswith("Example: distilmarco ") and epilog.count("Example:") == 1
    assert " ".join(epilog.split()) in shown
    # the example parses: its command exists, its options are real and its values convert
    for example in epilog.removeprefix("Example: ").split(" && "):
        args = shlex.split(example)[1:]
        root = typer.main.get_command(app)
        ctx = root.make_context("distilmarco", list(args), resilient_parsing=False)
        cmd_obj: Any = root
        rest = args
        while _is_group(cmd_obj):
            name, cmd_obj, rest = cmd_obj.resolve_command(ctx, rest)
            ctx = cmd_obj.make_context(str(name), list(rest), parent=ctx)


def test_version(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"distilmarco {distilmarco.__version__}"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["index", "add", "x", "--db", "a.db", "--field", "body", "--id-field", "key"],
         ["index", "add", "x", "--index", "a.db", "--column", "body", "--id-column", "key"]),
        (["index", "search", "q", "-d", "a.db", "--top", "3"],
         ["index", "search", "q", "--index", "a.db", "--top-k", "3"]),
        (["eval", "classify", "d", "--text-column", "t", "--json", "r.json"],
         ["eval", "classify", "d", "--column", "t", "--report", "r.json"]),
        (["eval", "ir", "d", "--json=r.json", "--k", "10"],
         ["eval", "ir", "d", "--report=r.json", "--top-k", "10"]),
        (["eval", "sts", "d", "--json"], ["eval", "sts", "d", "--json"]),
        (["classify", "train", "t.csv", "--label", "category"],
         ["classify", "train", "t.csv", "--label-column", "category"]),
        (["classify", "zero-shot", "t.txt", "--label", "a=b"],
         ["classify", "zero-shot", "t.txt", "--label", "a=b"]),
        (["map", "t.csv", "--label", "kind"], ["map", "t.csv", "--label-column", "kind"]),
        (["cluster", "t.txt", "-k", "5"], ["cluster", "t.txt", "--clusters", "5"]),
        (["dedup", "t.txt", "--top-k", "50"], ["dedup", "t.txt", "--neighbours", "50"]),
        (["embed", "-", "--", "--field"], ["embed", "-", "--", "--field"]),
    ],
)  # fmt: skip
def test_old_spellings_are_hidden_aliases(argv: list[str], expected: list[str]) -> None:
    rewritten, notes = rewrite_aliases(argv)
    assert rewritten == expected
    assert len(notes) == sum(a != b for a, b in zip(argv, expected, strict=True))
