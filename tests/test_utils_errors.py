"""run_cli: a UserError is one line on stderr and exit 2; Ctrl-C is exit 130; other errors propagate."""

from __future__ import annotations

import pytest

from cs336_basics.utils.errors import UserError, run_cli


def test_user_error_is_one_line_and_exit_2(capsys):
    def main(argv):
        raise UserError("--input x.txt: no such file")

    assert run_cli(main, []) == 2
    err = capsys.readouterr().err
    assert err == "error: --input x.txt: no such file\n"


def test_exit_status_passes_through_and_none_is_0():
    assert run_cli(lambda argv: 3, []) == 3
    assert run_cli(lambda argv: None, []) == 0


def test_keyboard_interrupt_is_130(capsys):
    def main(argv):
        raise KeyboardInterrupt

    assert run_cli(main, []) == 130
    assert "interrupted" in capsys.readouterr().err


def test_a_bug_is_not_disguised_as_bad_input():
    def main(argv):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        run_cli(main, [])
