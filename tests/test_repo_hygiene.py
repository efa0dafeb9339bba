"""What the documented commands write stays out of git, and nothing points outside the repository."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_folders_the_readme_writes_into_are_ignored():
    ignored = {line.strip().strip("/") for line in (REPO / ".gitignore").read_text().splitlines()}
    for out in ("tokenizers", "runs", "checkpoints", "exports", "curves.png", "curves.csv", "lr_find.png", "data/*"):
        assert out in ignored, f".gitignore lacks {out!r}"


def test_no_file_refers_to_places_outside_the_repository():
    bad = re.compile(r"\.\./shared|shared/spec|shared/data|[\x27\"]shared[\x27\"]")
    hits = []
    for path in [
        REPO / "README.md",
        *REPO.glob("docs/*.md"),
        *REPO.glob("cs336_basics/**/*.py"),
        *REPO.glob("scripts/*"),
        *REPO.glob("tests/*.py"),
    ]:
        if path.name == Path(__file__).name or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if bad.search(line):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def _tests_for(module: Path) -> list[Path]:
    """The test files tests/README.md's rule and table give for ``module`` (a path under the package)."""
    rel = module.relative_to(REPO / "cs336_basics").with_suffix("")
    stem = "_".join(rel.parts)
    found = [*REPO.glob(f"tests/test_{stem}.py"), *REPO.glob(f"tests/test_{stem}_*.py")]
    table = (REPO / "tests" / "README.md").read_text()
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 2 and f"cs336_basics/{rel.as_posix()}.py" in re.findall(r"`([\w/]+\.py)`", cells[1]):
            found += [REPO / "tests" / name for name in re.findall(r"`(test_[\w]+\.py)`", cells[2])]
    return found


def test_every_module_has_tests_found_by_the_rule_and_they_import_it():
    problems = []
    for module in sorted(REPO.glob("cs336_basics/**/*.py")):
        if module.name in ("__init__.py", "__main__.py"):
            continue
        rel = module.relative_to(REPO).with_suffix("")
        dotted, name = ".".join(rel.parts), rel.parts[-1]
        files = [f for f in _tests_for(module) if f.is_file()]
        if not files:
            problems.append(f"{rel}.py: no tests/test_{'_'.join(rel.parts[1:])}*.py and no row in tests/README.md")
            continue
        imports = re.compile(rf"\b{re.escape(dotted)}\b|from [\w.]+ import .*\b{name}\b")
        if not any(imports.search(f.read_text()) for f in files):
            problems.append(f"{rel}.py: none of {', '.join(f.name for f in files)} imports it")
    assert not problems, "\n".join(problems)


def _string_constants(path: Path, value: str) -> list[int]:
    """Lines where ``value`` is written as a string constant in code (docstrings left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value == value and id(node) not in docstrings
    ]


def test_the_engine_spells_the_end_of_text_token_once():
    """One constant, ``cs336_basics.interop.gpt2_files.EOT``; the rest of the engine and the scripts
    import it (the textbook, which imports nothing of the engine, may write its own)."""
    from tests.test_textbook_tier import TEXTBOOK

    files = [*REPO.glob("cs336_basics/**/*.py"), *REPO.glob("scripts/*.py")]
    engine = [p for p in files if not (p.parent == REPO / "cs336_basics" and p.name in TEXTBOOK)]
    hits = [f"{p.relative_to(REPO)}:{n}" for p in engine for n in _string_constants(p, "<|endoftext|>")]
    assert len(hits) == 1 and hits[0].startswith("cs336_basics/interop/gpt2_files.py:"), hits


def test_every_user_error_subclass_is_caught_by_name_somewhere():
    """A subclass of UserError earns its name only where something catches or checks it by that name
    (``except``, ``pytest.raises``, ``isinstance``, an ``error=`` argument); otherwise UserError says it."""
    code = {p: p.read_text(encoding="utf-8") for p in [*REPO.glob("cs336_basics/**/*.py"), *REPO.glob("tests/*.py")]}
    classes: dict[str, set[str]] = {}  # name -> its bases' names
    for text in code.values():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                classes[node.name] = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
    subclasses, grew = set(), True
    while grew:
        found = {n for n, bases in classes.items() if bases & (subclasses | {"UserError"})}
        grew, subclasses = found != subclasses, found
    every = "\n".join(code.values())
    unused = []
    for name in sorted(subclasses):
        n = re.escape(name)
        by_name = rf"except\b[^:\n]*\b{n}\b|raises\(\s*[\w.]*\b{n}\b|isinstance\([^)]*\b{n}\b|error\s*[:=][^\n]*\b{n}\b|, {n}\)"
        if not re.search(by_name, every):
            unused.append(name)
    assert not unused, f"raise UserError instead of {unused}: nothing catches them by name"


def test_the_test_files_the_code_names_exist():
    """Docstrings point at the tests that tie a fast twin to the textbook's piece: those files exist
    (a renamed test file leaves a stale name behind, e.g. ``tests/test_fast_nn_utils.py``)."""
    named = {
        (path.relative_to(REPO), m)
        for path in [*REPO.glob("cs336_basics/**/*.py"), *REPO.glob("scripts/*.py")]
        for m in re.findall(r"tests/test_\w+\.py", path.read_text(encoding="utf-8"))
    }
    assert named and not [f"{p}: {m}" for p, m in sorted(named) if not (REPO / m).is_file()]
