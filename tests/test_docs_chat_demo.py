"""The documented conversation demo (docs/data.md) runs from a fresh clone as written, at a tiny size.

The commands are read from the document itself (the fenced block after "The whole flow"), sizes are
shrunk by exact substitutions (each must apply, so an edit of the document that breaks one fails
here), `uv run python` becomes this interpreter, and the block runs with bash in an empty folder:
nothing outside it exists (no data/ files, no downloads).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "data.md"

# (documented text, tiny text): each must occur in the block.
SHRINK = [
    ("--stories 3000", "--stories 120"),
    ("--stories 500", "--stories 60"),
    ("--shard_tokens 100000", "--shard_tokens 4000"),
    ("--max_iters 200", "--max_iters 4"),
    ("--max_iters 100", "--max_iters 4"),
    ("--eval_iters 10", "--eval_iters 2"),
    ("--batch_size 16", "--batch_size 4"),
    ("--max_new_tokens 60", "--max_new_tokens 5"),
    ("rows[:-40]", "rows[:-10]"),
    ("rows[-40:]", "rows[-10:]"),
]


def demo_block() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("The whole flow")
    m = re.compile(r"```bash\n(.*?)```", re.S).search(text, start)
    assert m, f"no bash block after 'The whole flow' in {DOC.name}"
    return m.group(1)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_chat_demo_runs_from_an_empty_folder(tmp_path):
    block = demo_block()
    for old, new in SHRINK:
        assert old in block, f"the demo no longer contains {old!r}: update SHRINK"
        block = block.replace(old, new)
    assert "data/" not in block  # the demo makes its own data
    block = block.replace("uv run python", f'"{sys.executable}"')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    run = tmp_path / "runs" / "chat-demo"
    assert sorted(p.name for p in (run / "pre").glob("*.npy"))  # pretraining shards
    assert (run / "chat-train.npy").is_file() and (run / "chat-train.mask.npy").is_file()
    assert list((run / "sft").glob("checkpoint_iter_4.pt")) or (run / "sft" / "best.pt").is_file()
    assert "Initialized weights from" in r.stdout + r.stderr
