"""run_cli: a UserError is one line on stderr and exit 2; Ctrl-C is exit 130; other errors propagate."""

from __future__ import annotations

import errno
import os

import pytest

from cs336_basics.utils.errors import UserError, os_reason, read_error_line, run_cli


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


def test_one_line_for_an_os_error_written_by_hand():
    """The reason is the system's words (errno's text when the error has no strerror); a read names
    the file once: missing, a directory (what was expected), or why it cannot be read."""
    assert os_reason(OSError(errno.ENOSPC, "No space left on device")) == "No space left on device"
    assert os_reason(OSError(errno.EACCES, None)) == os.strerror(errno.EACCES)
    assert os_reason(OSError("disk on fire")) == "disk on fire" and os_reason(OSError()) == "OSError"
    gone = FileNotFoundError(errno.ENOENT, "No such file or directory", "a.txt")
    assert read_error_line("--input a.txt", gone) == "--input a.txt: no such file"
    folder = IsADirectoryError(errno.EISDIR, "Is a directory", "d")
    assert (
        read_error_line("--config d", folder, expected="a .toml file")
        == "--config d: is a directory, expected a .toml file"
    )
    assert read_error_line("d", folder) == "d: is a directory"
    denied = PermissionError(errno.EACCES, "Permission denied", "x.json")
    assert read_error_line("x.json", denied) == "x.json: cannot read: Permission denied"


def test_every_reader_words_a_missing_file_the_same(tmp_path):
    """The readers go through read_error_line (the tokenizer files used to say "file not found")."""
    from cs336_basics.interop.gpt2_files import read_merges_txt, read_vocab_json
    from cs336_basics.interop.hf_tokenizer_json import read_tokenizer_json
    from cs336_basics.interop.safetensors_io import load_file
    from cs336_basics.tools.tokenizer_stats import read_documents
    from cs336_basics.utils.fsutil import read_toml

    gone = tmp_path / "gone"
    for read in (read_vocab_json, read_merges_txt, read_tokenizer_json, load_file):
        with pytest.raises(UserError) as err:
            read(gone)
        assert str(err.value) == f"{gone}: no such file", read
    with pytest.raises(UserError, match=r"^--input .*gone: no such file$"):
        read_documents(gone)
    with pytest.raises(UserError, match=r"^--config .*gone: no such file$"):
        read_toml(gone, UserError)
    with pytest.raises(UserError, match=r"^--input .*: is a directory, expected a text file$"):
        read_documents(tmp_path)
