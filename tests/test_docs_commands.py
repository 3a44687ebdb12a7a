"""Every `fuse ...` command in README.md and docs/*.md is checked against the CLI itself.

The convention (docs/getting-started.md, "Commands in these docs"): a command that needs what a
fresh clone lacks (a GPU, a dataset such as COCO on disk, a trained run) says so in a trailing
shell comment, `# needs: GPU`, `# needs: COCO on disk`, `# needs: a trained run (make demo)`; a
Python block says so in its first line. This test reads the CLI (click's command objects), not
a list of commands, so it covers commands and flags added later:

* checked: every command's subcommand path and every flag exist (code blocks and inline code);
  `fuse train` with a shipped recipe also resolves the recipe with its overrides (load_plan);
* run: unmarked block commands that are quick and offline (`fuse plugins`, `fuse train ...
  --dry-run`) run through CliRunner and must exit 0; an unmarked `fuse train <shipped recipe>`
  runs as its dry run (files, plugins, options), which must pass on a fresh clone; unmarked
  Python blocks run in a fresh interpreter;
* marked: a block command whose dry run fails on a missing file, or a torchrun / srun launch,
  must carry `needs:`, so a reader is told before trying.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fuse.base.errors import FuseError
from fuse.cli import cli

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^\s*```(\w*)\s*$")
NEEDS = re.compile(r"needs:\s*([^#;)]+)")
SHELL_BREAKS = {"|", "&&", "||", ";", ">", ">>", "2>&1"}
RUN_FAST = {("plugins",), ("train",)}  # the subcommands run here (train only with --dry-run)


@dataclass
class Command:
    where: str                       # file:line
    argv: list[str]                  # the tokens after `fuse`
    block: bool                      # in a code block (a step to run) or inline (a reference)
    needs: str | None                # the `# needs:` marker, if any
    launch: bool = False             # started by torchrun / srun (several processes)
    path: tuple[str, ...] = ()       # the subcommand path, once resolved
    problems: list[str] = field(default_factory=list)


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _fuse_argv(line: str) -> list[str] | None:
    """The tokens after `fuse` (or `-m fuse`) of one shell command line, cut at pipes and redirects."""
    code = line.split(" #", 1)[0].strip().removeprefix("$ ")
    try:
        tokens = shlex.split(code)
    except ValueError:
        tokens = code.split()
    segment: list[str] = []
    for tok in [*tokens, "|"]:
        if tok in SHELL_BREAKS:
            for i, t in enumerate(segment):
                if t == "fuse" and (i == 0 or segment[i - 1] == "-m" or "=" in segment[i - 1]):
                    return segment[i + 1:]
            segment = []
        else:
            segment.append(tok)
    return None


def collect() -> tuple[list[Command], list[tuple[str, str, str | None]]]:
    """(fuse commands, Python blocks as (where, code, needs)) of README.md and docs/*.md."""
    commands, python = [], []
    for path in doc_files():
        rel = path.relative_to(ROOT)
        lang, start, buf = None, 0, []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = FENCE.match(line)
            if m and lang is None:
                lang, start, buf = m.group(1) or "text", n, []
                continue
            if lang is not None and line.strip() == "```":
                if lang == "python":
                    first = buf[0] if buf else ""
                    need = NEEDS.search(first) if first.lstrip().startswith("#") else None
                    python.append((f"{rel}:{start}", "\n".join(buf), need.group(1).strip() if need else None))
                elif lang in ("bash", "sh", "shell", "console", "text"):
                    joined, at = "", start
                    for i, b in enumerate(buf, start + 1):
                        joined, at = (joined + " " + b.rstrip("\\").strip() if joined else b.rstrip("\\")), (at if joined else i)
                        if b.rstrip().endswith("\\"):
                            continue
                        argv = None if joined.lstrip().startswith("#") else _fuse_argv(joined)
                        if argv is not None:
                            need = NEEDS.search(joined.split(" #", 1)[1]) if " #" in joined else None
                            commands.append(Command(f"{rel}:{at}", argv, True, need.group(1).strip() if need else None,
                                                    launch=bool(re.match(r"\s*(srun\s+)?torchrun\s", joined))))
                        joined = ""
                lang = None
                continue
            if lang is not None:
                buf.append(line)
                continue
            for span in re.findall(r"`(fuse [^`]+)`", line):
                argv = _fuse_argv(span)
                if argv is not None:
                    commands.append(Command(f"{rel}:{n}", argv, False, None))
    return commands, python


def _options(cmd: click.Command) -> dict[str, click.Option]:
    out = {"--help": None}
    for p in cmd.params:
        if isinstance(p, click.Option):
            out.update({o: p for o in (*p.opts, *p.secondary_opts)})
    return out


def _is_flag_token(tok: str) -> bool:
    return tok.startswith("-") and len(tok) > 1 and not re.fullmatch(r"-[\d.]+", tok)


def check(command: Command) -> None:
    """Resolve the subcommand path and check every flag; problems are recorded on the command."""
    tokens = [t.strip("[]") for t in command.argv if t not in ("...", "[", "]")]
    cmd, ctx, i, path = cli, click.Context(cli), 0, []
    while isinstance(cmd, click.Group) and i < len(tokens):
        tok = tokens[i]
        if _is_flag_token(tok):
            opt = _options(cmd).get(tok.split("=")[0], False)
            if opt is False:
                command.problems.append(f"`fuse {' '.join(path)}` has no option {tok}")
            i += 1
            continue
        try:
            sub = cmd.get_command(ctx, tok)
        except FuseError as exc:  # a group that resolves names itself (fuse data build NAME) refuses unknown ones
            if not command.where.startswith("docs/reliability.md"):  # that page documents refusals on purpose
                command.problems.append(f"`fuse {' '.join([*path, tok])}`: {str(exc).splitlines()[0][:120]}")
            return
        if sub is None:
            command.problems.append(f"`fuse {' '.join(path)}` has no subcommand '{tok}'")
            return
        cmd, ctx, path, i = sub, click.Context(sub, parent=ctx), [*path, tok], i + 1
    command.path = tuple(path)
    opts = _options(cmd)
    for tok in tokens[i:]:
        if _is_flag_token(tok) and tok.split("=")[0] not in opts:
            command.problems.append(f"`fuse {' '.join(path)}` has no option {tok.split('=')[0]}")


def _placeholder(tok: str) -> bool:
    """RECIPE, MODEL, OUT, ...: a name the reader fills in."""
    return bool(re.fullmatch(r"[A-Z][A-Z_]+[A-Z]", tok.split("/")[0].split("=")[-1]))


def _shipped_train(command: Command) -> tuple[str, list[str]] | None:
    """(recipe, overrides) of `fuse train <a recipe in this repo> key=value ...`, else None."""
    if command.path != ("train",):
        return None
    opts, args, argv = _options(cli.get_command(click.Context(cli), "train")), [], iter(command.argv[1:])
    for t in argv:
        if not _is_flag_token(t):
            args.append(t)
        elif "=" not in t and opts.get(t) is not None and not opts[t].is_flag:
            next(argv, None)  # the option's value (--log tensorboard, --seeds 0,1,2) is no override
    if not args or not (ROOT / args[0]).is_file() or any(a == "..." for a in args):
        return None
    return args[0], [a for a in args[1:] if not a.startswith("$")]  # $VAR: filled in by the script


@pytest.fixture(scope="module")
def documented():
    commands, python = collect()
    for c in commands:
        check(c)
    return commands, python


def test_the_docs_hold_commands_and_python_blocks(documented):
    commands, python = documented
    assert sum(c.block for c in commands) > 30 and sum(not c.block for c in commands) > 50 and len(python) > 5


def test_every_subcommand_and_flag_exists(documented):
    problems = [f"{c.where}: {p}" for c in documented[0] for p in c.problems]
    assert not problems, "\n".join(problems)


def test_every_documented_subcommand_shows_its_help(documented):
    """Each subcommand the docs use builds its --help (its module imports, its options are declared)."""
    paths = sorted({c.path for c in documented[0] if c.path})
    assert len(paths) >= 8
    for path in paths:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0 and "Usage: " in result.output, (path, result.output[-500:])


def test_documented_train_overrides_resolve(documented):
    """`fuse train <shipped recipe> overrides` resolves (schema, plugins, override paths), files aside."""
    from fuse.base.errors import FuseError
    from fuse.recipes.plan import load_plan

    bad, resolved = [], 0
    for c in documented[0]:
        shipped = _shipped_train(c)
        if shipped is None or "reliability.md" in c.where:  # reliability.md lists bad overrides on purpose
            continue
        recipe, overrides = shipped
        try:
            load_plan(str(ROOT / recipe), overrides)
            resolved += 1
        except FuseError as exc:
            bad.append(f"{c.where}: {exc}")
    assert not bad, "\n".join(bad)
    assert resolved >= 10


def test_block_commands_run_or_say_what_they_need(documented, monkeypatch):
    """Quick offline commands run and exit 0; launches and runs whose files a fresh clone lacks are marked."""
    monkeypatch.chdir(ROOT)
    unmarked, failed, ran = [], [], 0
    for c in (c for c in documented[0] if c.block and not c.problems):
        argv = [t.strip("[]") for t in c.argv if t not in ("...", "[", "]")]
        if c.needs is None and (c.path in RUN_FAST and (c.path != ("train",) or "--dry-run" in argv)
                                and not any(_placeholder(t) for t in argv)):
            result = CliRunner().invoke(cli, argv)
            ran += 1
            if result.exit_code != 0:
                failed.append(f"{c.where}: fuse {' '.join(argv)} exited {result.exit_code}: {result.output[-300:]}")
            continue
        shipped = _shipped_train(c)
        if shipped is not None and c.needs is None:  # a training run: its dry run must pass here
            result = CliRunner().invoke(cli, ["train", shipped[0], *shipped[1], "--dry-run"])
            ran += 1
            if result.exit_code != 0:
                unmarked.append(f"{c.where}: fuse {' '.join(c.argv)} --dry-run: {result.output.strip()[-200:]} "
                                "(fix it, or add '# needs: ...')")
    assert not failed, "\n".join(failed)
    assert not unmarked, "\n".join(unmarked)
    assert ran >= 5


def test_launches_are_marked(documented):
    """torchrun and srun lines start several processes, on GPUs in these docs: each says so."""
    bad = [f"{c.where}: fuse {' '.join(c.argv)[:80]}" for c in documented[0] if c.launch and c.needs is None]
    assert not bad, "add '# needs: GPUs' to:\n" + "\n".join(bad)


def test_python_blocks_run_or_say_what_they_need(documented, tmp_path):
    """Each unmarked Python block runs as written in a fresh interpreter (in an empty folder)."""
    failed, ran = [], 0
    for where, code, needs in documented[1]:
        if needs is not None:
            continue
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
        ran += 1
        if result.returncode != 0:
            failed.append(f"{where}: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.returncode}"
                          " (fix it, or mark its first line '# needs: ...')")
    assert not failed, "\n".join(failed)
    assert ran >= 1


def counts() -> dict[str, int]:
    """How many commands the docs hold and what this test does with them (printed by `python this_file`)."""
    commands, python = collect()
    for c in commands:
        check(c)
    block = [c for c in commands if c.block]
    run = [c for c in block if c.needs is None and c.path in RUN_FAST and
           (c.path != ("train",) or "--dry-run" in c.argv) and not any(_placeholder(t) for t in c.argv)]
    dry = [c for c in block if c.needs is None and c not in run and _shipped_train(c) is not None]
    return {"commands": len(commands), "in code blocks": len(block), "inline": len(commands) - len(block),
            "checked (subcommand and flags)": len(commands), "run as written": len(run),
            "subcommands whose --help runs": len({c.path for c in commands if c.path}),
            "run as --dry-run": len(dry),
            "train recipes resolved": sum(_shipped_train(c) is not None and "reliability.md" not in c.where
                                          for c in commands),
            "marked needs:": sum(c.needs is not None for c in commands),
            "python blocks": len(python), "python run": sum(n is None for *_, n in python),
            "python marked": sum(n is not None for *_, n in python)}


if __name__ == "__main__":
    print(counts())
