"""pytest plugin: a clear failure when one of the course's fixture files is missing or a Git LFS pointer.

The course's tests (``test_*.py``, ``conftest.py``, ``common.py``, ``fixtures/``, ``_snapshots/``) are
copied into ``tests/`` by users and are not ours to edit, so the check lives here and is loaded by
``addopts = "-p tests._dropin_checks"`` in pyproject.toml. Without it, a clone made without Git LFS
(or an interrupted download) shows up as ``UnpicklingError: invalid load key, 'v'`` deep inside a
fixture, which says nothing about the cause.

What it does, only when ``tests/fixtures/`` exists (otherwise nothing):

* works out which fixture files each collected test reads: ``FIXTURES_PATH / "a" / "b"`` expressions in
  the test function, in its module outside test functions (module constants and helpers, which any
  test may use), and in the ``conftest.py`` fixtures the test requests; plus
  ``_snapshots/<test name>.npz`` for tests using the course's ``numpy_snapshot`` fixture;
* fails exactly those tests at setup with one line naming the file and how to get it, while every
  other test runs as usual; the header and the end-of-run summary list the bad files once.

Failing only the affected tests (rather than refusing the whole session) keeps the rest of the suite
useful: one missing 5 MB sample should not hide the results of the other hundred tests, and the
summary still names the file up front.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
FIXTURES_DIR = TESTS_DIR / "fixtures"
SNAPSHOTS_DIR = TESTS_DIR / "_snapshots"
LFS_HEADER = b"version https://git-lfs.github.com/spec/v1"
LFS_POINTER_MAX_BYTES = 1024  # real pointers are ~130 bytes; anything bigger is real data

_bad_items: dict[str, str] = {}  # nodeid -> message
_bad_files: dict[Path, str] = {}  # file -> message


def is_lfs_pointer(path: Path) -> bool:
    """True for a Git LFS pointer file (a few lines of text standing in for the real content)."""
    try:
        if not path.is_file() or path.stat().st_size > LFS_POINTER_MAX_BYTES:
            return False
        with open(path, "rb") as f:
            return f.read(len(LFS_HEADER)) == LFS_HEADER
    except OSError:
        return False


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(TESTS_DIR.parent))
    except ValueError:
        return str(path)


def file_problem(path: Path) -> str | None:
    """One line saying what is wrong with a fixture file the tests read, or None if it looks fine."""
    if is_lfs_pointer(path):
        return (
            f"{_shown(path)} is a Git LFS pointer file ({path.stat().st_size} bytes), not the fixture itself: "
            "run `git lfs pull` in your copy of the course repository (or re-download the file) and copy it "
            f"into {_shown(path.parent)}/"
        )
    if not path.exists():
        where = "_snapshots" if SNAPSHOTS_DIR in path.parents else "fixtures"
        return (
            f"{_shown(path)} is missing: copy it from the course repository's tests/{where}/ "
            "(large files need `git lfs pull` there, or a re-download)"
        )
    return None


def _fixture_chain(node: ast.AST) -> tuple[str, ...] | None:
    """``FIXTURES_PATH / "a" / "b"`` -> ("a", "b"); anything else -> None."""
    parts = []
    while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        if not (isinstance(node.right, ast.Constant) and isinstance(node.right.value, str)):
            return None
        parts.append(node.right.value)
        node = node.left
    if isinstance(node, ast.Name) and node.id == "FIXTURES_PATH" and parts:
        return tuple(reversed(parts))
    return None


def _refs(node: ast.AST) -> frozenset[tuple[str, ...]]:
    found = {c for n in ast.walk(node) if (c := _fixture_chain(n)) is not None}
    # FIXTURES_PATH / "ts_tests" / "model.pt" also contains FIXTURES_PATH / "ts_tests": keep the longest.
    return frozenset(r for r in found if not any(o != r and o[: len(r)] == r for o in found))


@cache
def _module_refs(path: Path) -> tuple[frozenset, dict[str, frozenset]]:
    """(refs outside test functions, {test name or Class.test name: refs inside it}) for one file."""
    try:
        text = path.read_text(encoding="utf-8")
        if "FIXTURES_PATH" not in text:
            return frozenset(), {}
        tree = ast.parse(text)
    except (OSError, SyntaxError, ValueError):
        return frozenset(), {}
    shared: set = set()
    per_test: dict[str, frozenset] = {}
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name.startswith("test"):
            per_test[stmt.name] = _refs(stmt)
        elif isinstance(stmt, ast.ClassDef):
            for sub in stmt.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and sub.name.startswith("test"):
                    per_test[f"{stmt.name}.{sub.name}"] = _refs(sub)
                else:
                    shared |= _refs(sub)
        else:
            shared |= _refs(stmt)
    return frozenset(shared), per_test


@cache
def _conftest_fixture_refs(conftest: Path) -> dict[str, frozenset]:
    """{fixture function name: fixture files it reads} for the course's conftest.py."""
    try:
        text = conftest.read_text(encoding="utf-8")
        if "FIXTURES_PATH" not in text:
            return {}
        tree = ast.parse(text)
    except (OSError, SyntaxError, ValueError):
        return {}
    return {s.name: r for s in tree.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and (r := _refs(s))}


def files_read_by(item: pytest.Item) -> list[Path]:
    """The fixture/snapshot files a collected test will read (as far as the source says)."""
    files: list[Path] = []
    refs: set = set()
    path = Path(str(getattr(item, "path", getattr(item, "fspath", ""))))
    if path.suffix == ".py":
        shared, per_test = _module_refs(path)
        name = getattr(item, "originalname", item.name)
        cls = getattr(item, "cls", None)
        refs |= shared | per_test.get(f"{cls.__name__}.{name}" if cls is not None else name, frozenset())
    fixturenames = getattr(item, "fixturenames", ())
    for fixture, fixture_refs in _conftest_fixture_refs(TESTS_DIR / "conftest.py").items():
        if fixture in fixturenames:
            refs |= fixture_refs
    files += [FIXTURES_DIR.joinpath(*r) for r in sorted(refs)]
    if "numpy_snapshot" in fixturenames:  # the course's snapshots are named after the test node
        files.append(SNAPSHOTS_DIR / f"{item.name}.npz")
    return files


def pytest_report_header(config):
    if not FIXTURES_DIR.is_dir():
        return None
    pointers = sorted(p for d in (FIXTURES_DIR, SNAPSHOTS_DIR) if d.is_dir() for p in d.rglob("*") if is_lfs_pointer(p))
    if pointers:
        return [f"course fixtures: Git LFS pointer instead of data: {_shown(p)}" for p in pointers]
    return None


def pytest_collection_modifyitems(session, config, items):
    _bad_items.clear()
    _bad_files.clear()
    if not FIXTURES_DIR.is_dir():
        return
    for item in items:
        msgs = []
        for f in files_read_by(item):
            msg = _bad_files.get(f) or file_problem(f)
            if msg:
                _bad_files[f] = msg
                msgs.append(msg)
        if msgs:
            _bad_items[item.nodeid] = "; ".join(dict.fromkeys(msgs))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    msg = _bad_items.get(item.nodeid)
    if msg:
        pytest.fail(msg, pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _bad_files:
        return
    terminalreporter.section("course fixture files", yellow=True)
    for msg in _bad_files.values():
        terminalreporter.write_line(msg)
    terminalreporter.write_line(f"({len(_bad_items)} test(s) that read them failed at setup; the others ran normally)")
