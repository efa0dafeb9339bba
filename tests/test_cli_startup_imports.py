"""The programs' argument parsing stays light: `--help` and one-line errors import no FSDP and no sympy.

`torch.distributed.optim` (ZeRO-1) pulls in FSDP, DTensor and sympy, which cost seconds on every start
when imported eagerly. This checks what is imported (sys.modules), not a time.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_PROBE = """
import json, runpy, sys
mod, args = sys.argv[1], sys.argv[2:]
sys.argv = [mod] + args
try:
    runpy.run_module(mod, run_name="__main__")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("torch.distributed.fsdp", "sympy")))))
"""


@pytest.mark.parametrize(
    "module, args",
    [
        ("cs336_basics.training_together", ["--help"]),
        ("cs336_basics.training_together", ["--train_data_path", "x.npy", "--lr", "-1"]),  # a one-line error
        ("cs336_basics.training_together", ["--train_data_path", "x.npy", "--lrr", "3"]),  # an unknown flag
        ("cs336_basics.generate", ["--help"]),
        ("cs336_basics.tokenize_data", ["--help"]),
        ("cs336_basics.train_bpe", ["--help"]),
    ],
)
def test_argument_parsing_imports_no_fsdp_and_no_sympy(module, args, tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, module, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    heavy = json.loads(r.stdout.strip().splitlines()[-1])
    assert heavy == [], f"{module} {' '.join(args)} imported {heavy[:5]}"
    if args != ["--help"]:
        assert r.stderr.count("error") == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
