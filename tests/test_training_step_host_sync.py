"""No host sync per step: the training loop, run on CPU under a TorchFunctionMode that counts every
read-back of a tensor value (``item``, ``tolist``, ``__float__``, ``__bool__``, ``__int__``), reads
nothing back on steps that are not logged, evaluated or checkpointed, and nothing at all inside
``train_step``. The non-finite guard's behaviour on injected NaNs is tested in
test_training_together_program.py and test_training_together_reliability.py."""

from __future__ import annotations

import contextlib
import io

import pytest
from torch.overrides import TorchFunctionMode

from cs336_basics import training_together
from cs336_basics.training import step as step_module

from ._train_utils import base_argv, write_pattern_data

READBACKS = {"item", "tolist", "__float__", "__bool__", "__int__", "__index__"}


class CountReadbacks(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in READBACKS:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_loop_reads_back_only_at_log_eval_and_checkpoint_steps(tmp_path, monkeypatch, optimizer):
    data = write_pattern_data(tmp_path / "data", n_train=4000, n_val=1000)
    mode = CountReadbacks()
    at_step_start: list[int] = []  # the count when each train_step call begins
    inside: list[int] = []  # read-backs during each train_step call
    real_step = step_module.train_step

    def counting_step(*args, **kwargs):
        at_step_start.append(mode.count)
        result = real_step(*args, **kwargs)
        inside.append(mode.count - at_step_start[-1])
        return result

    monkeypatch.setattr(training_together, "train_step", counting_step)
    argv = base_argv(data, tmp_path / "run", "--optimizer", optimizer, "--heartbeat_s", "0",
                     max_iters=14, log_interval=4, eval_interval=6, checkpoint_interval=100)  # fmt: skip
    with mode, contextlib.redirect_stdout(io.StringIO()):
        assert training_together.main(argv) == 0
    assert len(at_step_start) == 14
    assert inside == [0] * 14, f"read-backs inside train_step: {inside}"
    # After step i (1-based) the loop runs until step i + 1 begins: logged (1, 4, 8, 12), evaluated
    # (6, 12) and the last step (14) may read back; every other step must not.
    quiet = [i for i in range(1, 14) if i not in (1, 4, 6, 8, 12)]
    between = {i: at_step_start[i] - at_step_start[i - 1] for i in range(1, 14)}
    assert all(between[i] == 0 for i in quiet), f"read-backs after quiet steps: {between}"
    assert any(between[i] > 0 for i in (4, 8)), f"the mode counted nothing at logged steps: {between}"
