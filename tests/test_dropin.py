"""The course's tests dropped into tests/: a small course-style layout runs with our adapters and plugin.

Builds, in a temp dir, what a user gets after copying the course's files next to ours: our
``tests/adapters.py``, ``tests/__init__.py``, ``tests/_dropin_checks.py`` and pyproject.toml (which
registers the plugin), plus a stand-in for the course's ``conftest.py`` (``numpy_snapshot``,
``ts_state_dict``), ``common.py`` (``FIXTURES_PATH``), ``test_*.py`` importing ``.adapters``,
``fixtures/`` and ``_snapshots/``. Expected values come from torch built-ins, never from our code.
Then one fixture becomes a Git LFS pointer and a fixture and a snapshot go missing: only the tests that
read them fail, each with one line naming the file; without a fixtures/ folder the plugin does nothing.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 2417133\n"
)

COMMON = """
import pathlib
FIXTURES_PATH = (pathlib.Path(__file__).resolve().parent) / "fixtures"
"""

CONFTEST = """
import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def numpy_snapshot(request):
    class Snap:
        def assert_match(self, actual, atol=1e-6):
            expected = np.load(Path("tests/_snapshots") / f"{request.node.name}.npz")["array"]
            np.testing.assert_allclose(actual.detach().numpy(), expected, atol=atol, rtol=1e-4)
    return Snap()


@pytest.fixture
def ts_state_dict():
    import torch
    from .common import FIXTURES_PATH
    state_dict = torch.load(FIXTURES_PATH / "ts_tests" / "model.pt", map_location="cpu")
    config = json.load(open(FIXTURES_PATH / "ts_tests" / "model_config.json"))
    return state_dict, config
"""

TEST_MODEL = """
import torch

from .adapters import run_linear


def test_linear(numpy_snapshot, ts_state_dict):
    w = ts_state_dict[0]["layers.0.ffn.w1.weight"]
    torch.manual_seed(1)
    x = torch.randn(2, 3, w.shape[1])
    numpy_snapshot.assert_match(run_linear(w.shape[1], w.shape[0], w, x))


def test_config_only(ts_state_dict):
    assert ts_state_dict[1]["d_model"] == 8
"""

TEST_NN = """
import torch

from .adapters import run_softmax


def test_softmax_matches_pytorch():
    x = torch.tensor([[0.4655, 0.8303, 0.9608], [0.1, -2.0, 30.0]])
    torch.testing.assert_close(run_softmax(x, dim=-1), torch.softmax(x, dim=-1))
"""

TEST_TOKENIZER = """
from .adapters import get_tokenizer
from .common import FIXTURES_PATH

SAMPLE_PATH = FIXTURES_PATH / "sample.txt"


def test_roundtrip_sample():
    vocab = {i: bytes([i]) for i in range(256)}
    tok = get_tokenizer(vocab, [], None)
    text = SAMPLE_PATH.read_text()
    assert tok.decode(tok.encode(text)) == text


def test_big_sample():
    assert len((FIXTURES_PATH / "big_sample.txt").read_text()) > 1000
"""


def _build(root: Path) -> None:
    tests = root / "tests"
    (tests / "fixtures" / "ts_tests").mkdir(parents=True)
    (tests / "_snapshots").mkdir()
    for name in ("__init__.py", "adapters.py", "_dropin_checks.py"):
        shutil.copy(REPO / "tests" / name, tests / name)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    for name, text in (
        ("common.py", COMMON),
        ("conftest.py", CONFTEST),
        ("test_model.py", TEST_MODEL),
        ("test_nn_utils.py", TEST_NN),
        ("test_tokenizer.py", TEST_TOKENIZER),
    ):
        (tests / name).write_text(textwrap.dedent(text))
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 8, generator=g)
    torch.save({"layers.0.ffn.w1.weight": w}, tests / "fixtures" / "ts_tests" / "model.pt")
    (tests / "fixtures" / "ts_tests" / "model_config.json").write_text('{"d_model": 8, "d_ff": 16}')
    (tests / "fixtures" / "sample.txt").write_text("Once upon a time, héllo <|endoftext|> wörld\n")
    (tests / "fixtures" / "big_sample.txt").write_text("a story. " * 500)
    torch.manual_seed(1)  # the same input the fake test draws
    x = torch.randn(2, 3, 8)
    np.savez(tests / "_snapshots" / "test_linear.npz", array=(x @ w.T).numpy())  # built-in reference


def _pytest(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # The temp dir's `tests` package must win over the repository's; cs336_basics comes from the repo.
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(REPO)])
    env.pop("PYTEST_ADDOPTS", None)
    env["COLUMNS"] = "1000"  # the -ra summary lines are cut to the terminal width
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]  # not -q: the header is part of the check
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def layout(tmp_path):
    _build(tmp_path)
    return tmp_path


def test_plugin_is_registered_in_pyproject():
    text = (REPO / "pyproject.toml").read_text()
    assert "-p tests._dropin_checks" in text


def test_course_layout_passes_then_broken_fixtures_fail_clearly(layout):
    r = _pytest(layout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 passed" in r.stdout and "course fixture" not in r.stdout

    # A clone without Git LFS (the weights are a pointer), a fixture and a snapshot never copied.
    (layout / "tests" / "fixtures" / "ts_tests" / "model.pt").write_text(LFS_POINTER)
    (layout / "tests" / "fixtures" / "big_sample.txt").unlink()
    (layout / "tests" / "_snapshots" / "test_linear.npz").unlink()
    r = _pytest(layout)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "UnpicklingError" not in out and "invalid load key" not in out and "Traceback" not in out
    pointer = "tests/fixtures/ts_tests/model.pt is a Git LFS pointer file (132 bytes), not the fixture itself"
    assert "course fixtures: Git LFS pointer instead of data: tests/fixtures/ts_tests/model.pt" in out  # header
    assert f"ERROR tests/test_model.py::test_linear - Failed: {pointer}" in out
    assert "tests/_snapshots/test_linear.npz is missing" in out
    assert f"ERROR tests/test_model.py::test_config_only - Failed: {pointer}" in out
    assert "git lfs pull" in out
    assert "ERROR tests/test_tokenizer.py::test_big_sample - Failed: tests/fixtures/big_sample.txt is missing" in out
    # Tests that do not read the broken files still run and pass.
    assert "2 passed, 3 errors" in out

    # Only our own kind of tests (no course fixtures/ at all): the plugin stays out of the way.
    shutil.rmtree(layout / "tests" / "fixtures")
    for name in ("test_model.py", "test_tokenizer.py", "test_nn_utils.py"):
        (layout / "tests" / name).unlink()
    (layout / "tests" / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    r = _pytest(layout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout and "course fixture" not in r.stdout
