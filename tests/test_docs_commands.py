"""Every documented command of ours parses as written, without running the job.

The fenced ``bash`` blocks of README.md and docs/*.md are read line by line (``\\`` continuations
joined, heredoc bodies skipped, comments dropped). A command that runs one of our programs
(``[uv run [--extra X]] python[3] -m cs336_basics.X ...``, ``python scripts/Y.py ...``, ``torchrun ... -m
cs336_basics.X ...``, behind ``VAR=value`` or ``nice``, before a pipe or a redirection) is checked with
that program's own argument parser: it must accept exactly that argv, and every ``--flag`` must be
one of its flags spelled out (argparse would also take an abbreviation, so a flag missing a letter
would otherwise pass). The training program's command lines also go through ``parse_settings`` (its
validation) unless they name a file it would read (``--config``, ``--override``, ``--init_from``).
Where a program builds its parser inside ``main()``, the parser is caught at its ``parse_args`` call,
before anything runs. ``bash``/``sbatch`` lines of our scripts must name a script that exists. Other
tools' commands (pip, jq, vllm, llama.cpp, ``python -c``) are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

CONTROL = {"|", "||", "&", "&&", ";", "(", ")"}
SHELL_PREFIXES = {"nice", "exec", "time", "do", "then", "else"}
UV_OPTIONS_WITH_VALUE = {"--extra", "--group", "--with", "--python", "--directory", "--project", "--package"}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*$|\.\.\.")


@dataclass
class Command:
    where: str  # file:line
    text: str
    program: str  # a module (cs336_basics.x), a script path (scripts/y.py), or "sh:" + a shell script
    argv: list[str]


def bash_blocks(path: Path) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of each fenced bash block."""
    blocks, current, start = [], None, 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if current is None and line.strip() == "```bash":
            current, start = [], n + 1
        elif current is not None and line.strip() == "```":
            blocks.append((start, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def command_lines(start: int, lines: list[str]) -> list[tuple[int, str]]:
    """Logical lines: continuations joined, heredoc bodies left out."""
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        n, line = start + i, lines[i]
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + " " + lines[i].strip()
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        i += 1
        if heredoc:
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                i += 1
            i += 1
        out.append((n, line))
    return out


def words(line: str) -> list[str]:
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
    lex.whitespace_split = True
    return list(lex)


def segments(tokens: list[str]) -> list[list[str]]:
    """Simple commands: split at control operators, each cut at its first redirection."""
    out, current = [], []
    for tok in [*tokens, ";"]:
        if tok in CONTROL:
            cut = next((k for k, t in enumerate(current) if re.fullmatch(r"[<>&]+", t)), len(current))
            if current[:cut]:
                out.append(current[:cut])
            current = []
        else:
            current.append(tok)
    return out


def our_command(seg: list[str]) -> tuple[str, list[str]] | None:
    """(program, argv) when ``seg`` runs one of ours, else None."""
    i = 0
    while i < len(seg) and (re.match(r"^[A-Za-z_]\w*=", seg[i]) or seg[i] in SHELL_PREFIXES):
        i += 1
    if seg[i : i + 2] == ["uv", "run"]:
        i += 2
        while i < len(seg) and seg[i].startswith("-"):
            i += 2 if seg[i] in UV_OPTIONS_WITH_VALUE else 1
    rest = seg[i:]
    if not rest:
        return None
    if rest[0] in ("python", "python3") and len(rest) > 1:
        if rest[1] == "-m" and len(rest) > 2 and rest[2].split(".")[0] == "cs336_basics":
            return rest[2], rest[3:]
        if rest[1] == "-m" and len(rest) > 2 and rest[2] == "torch.distributed.run":
            return "torchrun", rest[3:]
        if rest[1].startswith("scripts/"):
            return rest[1], rest[2:]
        return None
    if rest[0] == "torchrun":
        return "torchrun", rest[1:]
    if rest[0] in ("bash", "sbatch"):
        script = next((t for t in rest[1:] if t.endswith(".sh")), None)
        return ("sh:" + script, []) if script else None
    return None


def documented_commands() -> list[Command]:
    found = []
    for doc in DOCS:
        for start, lines in bash_blocks(doc):
            for n, line in command_lines(start, lines):
                for seg in segments(words(line)):
                    ours = our_command(seg)
                    if ours is not None:
                        where = f"{doc.relative_to(REPO)}:{n}"
                        found.append(Command(where, " ".join(seg), ours[0], ours[1]))
    return found


# ----------------------------------------------------------------------------------------------
# parsers
# ----------------------------------------------------------------------------------------------
class _Caught(Exception):
    pass


def caught_parser(fn, argv: list[str]) -> argparse.ArgumentParser | None:
    """The parser ``fn(argv)`` builds, stopped at its ``parse_args`` (nothing after it runs)."""
    seen: list[argparse.ArgumentParser] = []

    def stop(self, *args, **kwargs):
        seen.append(self)
        raise _Caught

    with mock.patch.object(argparse.ArgumentParser, "parse_args", stop):
        with contextlib.suppress(_Caught):
            fn(argv)
    return seen[0] if seen else None


def load_script(path: str):
    spec = importlib.util.spec_from_file_location(f"_docs_{Path(path).stem}", REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parser_for(program: str, argv: list[str]) -> argparse.ArgumentParser | None:
    if program == "cs336_basics.training_together":
        from cs336_basics.training.settings import build_parser

        p = build_parser()
        if any(a.split("=")[0] in ("--config", "--override") for a in argv):
            for action in p._actions:  # the file may hold the required keys
                action.required = False
        return p
    if program == "cs336_basics.tools.lr_find":
        from cs336_basics.tools.lr_find import _add_flags
        from cs336_basics.training.settings import build_parser

        p = build_parser()
        _add_flags(p)
        return p
    if program.startswith("scripts/"):
        module = load_script(program)
    else:
        if importlib.util.find_spec(program) is None:
            raise AssertionError(f"no module {program}")
        module = importlib.import_module(program)
    if hasattr(module, "build_parser"):
        return module.build_parser()
    for name in ("parse_args", "main"):
        fn = getattr(module, name, None)
        if fn is not None:
            try:
                p = caught_parser(fn, argv)
            except TypeError:  # a main() without argv
                p = None
            if p is not None:
                return p
    return None


def parse_error(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """Why ``parser`` refuses ``argv`` (None: accepted, every flag spelled out)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit:
            return (err.getvalue().strip().splitlines() or ["refused"])[-1]
    for tok in argv:
        if tok == "--":
            break
        if tok.startswith("--") and tok.split("=")[0] not in parser._option_string_actions:
            return f"{tok.split('=')[0]}: not a flag of {parser.prog} (an abbreviation or a misspelling)"
    return None


def check(program: str, argv: list[str]) -> str | None:
    """None when the program accepts ``argv``; else the reason."""
    if program.startswith("sh:"):
        script = program[3:]
        return None if (REPO / script).is_file() else f"{script}: no such script"
    placeholders = [a for a in argv if PLACEHOLDER.search(a)]
    if placeholders:
        return f"placeholder values {placeholders}: write real example values"
    if program == "torchrun":
        from torch.distributed.run import get_args_parser

        tr = get_args_parser()
        at = next((k for k, a in enumerate(argv) if a in ("-m", "--module")), None)
        own = argv if at is None else argv[: at + 2]  # torchrun's flags, -m and the module
        problem = parse_error(tr, own)
        if problem:
            return f"torchrun: {problem}"
        if at is None or not argv[at + 1].startswith("cs336_basics"):
            return None
        return check(argv[at + 1], argv[at + 2 :])
    parser = parser_for(program, argv)
    if parser is None:
        return None if not argv else f"{program}: no argument parser found, yet it is given {argv}"
    problem = parse_error(parser, argv)
    if problem:
        return problem
    if program == "cs336_basics.training_together" and not any(
        a.split("=")[0] in ("--config", "--override", "--init_from") for a in argv
    ):
        from cs336_basics.training.settings import parse_settings

        try:
            with contextlib.redirect_stderr(io.StringIO()):
                parse_settings(argv)
        except (Exception, SystemExit) as exc:
            return f"parse_settings: {exc}"
    return None


COMMANDS = documented_commands()


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_command_parses(cmd: Command):
    problem = check(cmd.program, cmd.argv)
    assert problem is None, f"{cmd.where}: {cmd.text}\n  -> {problem}"


def test_the_docs_hold_our_commands():
    programs = {c.program for c in COMMANDS}
    for program in (
        "cs336_basics.quickstart",
        "cs336_basics.train",
        "cs336_basics.training_together",
        "cs336_basics.train_bpe",
        "cs336_basics.tokenize_data",
        "cs336_basics.generate",
        "cs336_basics.tools.export",
        "cs336_basics.tools.sweep",
        "cs336_basics.tools.lr_find",
        "cs336_basics.quickstart.storygen",
        "scripts/bench_quality.py",
        "torchrun",
    ):
        assert program in programs, program
    assert any(c.where.startswith("README.md") for c in COMMANDS)
    assert all(c.where.startswith(("README.md", "docs/")) for c in COMMANDS)


def resolves(dotted: str) -> bool:
    """``cs336_basics.a.b[.attr...]`` names a module, or an attribute of one."""
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        name = ".".join(parts[:k])
        try:
            obj = importlib.import_module(name)
        except ImportError:
            continue
        try:
            for attr in parts[k:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


# The course's own files, which docs/course-tests.md tells you to copy in (not ours).
COURSE_FILES = {"conftest.py", "common.py", "test_model.py", "test_nn_utils.py", "test_optimizer.py", "test_data.py",
                "test_serialization.py", "test_tokenizer.py", "test_train_bpe.py"}  # fmt: skip


def test_the_paths_and_names_the_docs_mention_exist():
    """Files and modules named in README.md and docs/ (so a moved module leaves no stale mention)."""
    stale = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for path in sorted(set(re.findall(r"\b((?:cs336_basics|scripts|tests)/[\w/]+\.(?:py|sh|toml))", text))):
            if not (REPO / path).is_file() and Path(path).name not in COURSE_FILES:
                stale.append(f"{doc.relative_to(REPO)}: {path}")
        for name in sorted(set(re.findall(r"\b(test_\w+\.py)\b", text))):
            if not (REPO / "tests" / name).is_file() and name not in COURSE_FILES:
                stale.append(f"{doc.relative_to(REPO)}: tests/{name}")
        for dotted in sorted(set(re.findall(r"\b(cs336_basics(?:\.\w+)+)", text))):
            if not resolves(dotted):
                stale.append(f"{doc.relative_to(REPO)}: {dotted}")
    assert not stale, "\n".join(stale)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_links_between_the_docs_resolve():
    anchors = {doc: {slug(m) for m in re.findall(r"^#+ (.*)$", doc.read_text(encoding="utf-8"), re.M)} for doc in DOCS}
    broken = []
    for doc in DOCS:
        for target, anchor in re.findall(r"\]\(([\w/.-]*\.md)?(?:#([\w-]+))?\)", doc.read_text(encoding="utf-8")):
            if not target and not anchor:
                continue
            path = (doc.parent / target).resolve() if target else doc
            if path not in anchors or (anchor and anchor not in anchors[path]):
                broken.append(f"{doc.relative_to(REPO)}: ({target}#{anchor})")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize(
    "program, argv",
    [
        ("cs336_basics.training_together", ["--train_data_path", "a.npy", "--max_iter", "5"]),  # abbreviation
        ("cs336_basics.training_together", ["--train_data_path", "a.npy", "--lrr", "1e-3"]),
        (
            "cs336_basics.training_together",
            ["--train_data_path", "a.npy", "--lr", "1e-3", "--min_lr", "1e-2"],
        ),  # validation
        ("cs336_basics.train", ["--train_data", "a.npy", "--max_iter", "5"]),  # parser built inside the module
        ("cs336_basics.quickstart.storygen", ["--storie", "5"]),  # parser built inside main()
        ("scripts/bench_quality.py", ["--recipes", "leaderboard"]),
        ("scripts/bench_fsdp.py", ["--optimiser", "muon"]),
        (
            "cs336_basics.tokenize_data",
            ["--tokenizer", "t", "--input", "a.txt", "--output", "a.npy", "--shard_tokens", "N"],
        ),
        ("torchrun", ["--standalone", "--nproc_per_node", "2", "-m", "cs336_basics.training_together", "--fsdpp"]),
        ("sh:scripts/no_such_script.sh", []),
    ],
)
def test_a_misspelled_flag_or_a_placeholder_is_caught(program, argv):
    assert check(program, argv) is not None


def test_the_line_reader(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(
        "```bash\n"
        "# a comment\n"
        "A=1 nice uv run --extra plot python -m cs336_basics.generate --checkpoint runs/x \\\n"
        "    --prompt 'a | b' > out.txt 2>&1 &\n"
        "uv run python - <<'PY'\n"
        "python -m cs336_basics.train --no_such_flag\n"
        "PY\n"
        "uv run python -m cs336_basics.training_together --log_format json | jq -c .\n"
        "```\n"
    )
    cmds = [
        our_command(seg)
        for start, lines in bash_blocks(doc)
        for _, line in command_lines(start, lines)
        for seg in segments(words(line))
    ]
    assert [c for c in cmds if c] == [
        ("cs336_basics.generate", ["--checkpoint", "runs/x", "--prompt", "a | b"]),
        ("cs336_basics.training_together", ["--log_format", "json"]),
    ]


if __name__ == "__main__":  # list what is checked
    for c in COMMANDS:
        print(c.where, c.program, c.argv, sep="\t", file=sys.stdout)
