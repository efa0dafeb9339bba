"""What the README's commands write stays out of git, and nothing points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_folders_the_readme_writes_into_are_ignored():
    ignored = {line.strip().strip("/") for line in (REPO / ".gitignore").read_text().splitlines()}
    for out in ("tokenizers", "runs", "checkpoints", "curves.png", "curves.csv", "lr_find.png", "data/*"):
        assert out in ignored, f".gitignore lacks {out!r}"


def test_no_file_refers_to_places_outside_the_repository():
    bad = re.compile(r"\.\./shared|shared/spec|shared/data|[\x27\"]shared[\x27\"]")
    hits = []
    for path in [
        REPO / "README.md",
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
