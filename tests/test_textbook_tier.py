"""The two tiers: the textbook (the package root's handout pieces) and the engine built on it.

* The textbook files import only torch, numpy, regex, einops, jaxtyping, the standard library and
  each other (read from their source with ``ast``, every import, also inside functions).
* The whole tier, docstrings included, stays within 2,000 lines (the course staff's reference is
  ~680 lines for the model, optimizer, utilities and data).
* No import cycle anywhere in the package (every import, also the ones inside functions).
"""

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "cs336_basics"
TEXTBOOK = [
    "__init__.py",
    "layers.py",
    "model.py",
    "nn_utils.py",
    "optim.py",
    "data.py",
    "checkpoint.py",
    "pretokenize.py",
    "bpe.py",
    "tokenizer.py",
    "train.py",
]
ALLOWED = {"torch", "numpy", "regex", "einops", "jaxtyping", "__future__"}
MAX_LINES = 2000


def imports(path: Path) -> list[str]:
    """Every module ``path`` imports (absolute names; relative ones resolved), anywhere in the file."""
    package = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            # `from pkg import mod` imports pkg.mod when mod is a module of pkg
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append(sub if module_path(sub) is not None else base)
    return out


def module_path(name: str) -> Path | None:
    if not name.startswith("cs336_basics"):
        return None
    rel = Path(*name.split(".")[1:])
    for cand in (PKG / rel.with_suffix(".py"), PKG / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def test_textbook_imports_only_its_libraries_and_itself():
    textbook_modules = {"cs336_basics"} | {f"cs336_basics.{f[:-3]}" for f in TEXTBOOK if f != "__init__.py"}
    bad = []
    for name in TEXTBOOK:
        for mod in imports(PKG / name):
            top = mod.split(".")[0]
            if top == "cs336_basics":
                if mod not in textbook_modules:
                    bad.append(f"{name} imports {mod}")
            elif top not in ALLOWED and top not in sys.stdlib_module_names:
                bad.append(f"{name} imports {mod}")
    assert bad == [], "the textbook imports only torch, numpy, regex, einops, jaxtyping and itself:\n" + "\n".join(bad)


def test_textbook_is_at_most_2000_lines():
    counts = {name: len((PKG / name).read_text(encoding="utf-8").splitlines()) for name in TEXTBOOK}
    total = sum(counts.values())
    assert total <= MAX_LINES, f"the textbook has {total} lines (at most {MAX_LINES}): {counts}"


def test_every_textbook_file_exists_and_nothing_else_at_the_root_is_a_handout_piece():
    """The root holds the textbook and the course's programs; everything else is in subpackages."""
    programs = {"training_together.py", "train_bpe.py", "tokenize_data.py", "generate.py"}
    root = {p.name for p in PKG.glob("*.py")}
    assert set(TEXTBOOK) <= root
    assert root - set(TEXTBOOK) == programs, root - set(TEXTBOOK) - programs


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        name = ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {m for m in imports(path) if module_path(m) is not None and m != name}
    # Packages import their submodules and not the other way (an __init__ that only documents is a leaf).
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
