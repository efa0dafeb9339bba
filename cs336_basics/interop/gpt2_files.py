"""GPT-2's tokenizer file format: ``vocab.json``, ``merges.txt`` (and our ``special_tokens.json``).

``vocab.json`` maps each token, written in GPT-2's byte-to-unicode alphabet (so every token is a
visible string without spaces, e.g. ``b" the"`` -> ``"Ġthe"``), to its id. ``merges.txt`` has an
optional ``#version`` line, then one merge ``a b`` per line, in rank order. GPT-2's published files
load with these readers, and the files ``write_tokenizer_files`` writes load in other tools (HF
``tokenizers``, tiktoken). Errors name the file and line.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from cs336_basics.utils.errors import UserError, read_error_line
from cs336_basics.utils.fsutil import atomic_write_text

SPECIAL_TOKENS_FILE = "special_tokens.json"
# GPT-2's end-of-text token, the course's document separator: the engine's one spelling of it.
EOT = "<|endoftext|>"


class TokenizerError(UserError, ValueError):
    """Bad tokenizer files or arguments; the message names the file/line or the offending value."""


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters.

    Printable Latin-1 bytes map to themselves; the rest (control bytes, space, ...) are shifted to
    code points 256+, so every token is a visible string in ``vocab.json`` and never contains a
    space (which is what separates the two halves of a ``merges.txt`` line).
    """
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def token_to_str(token: bytes) -> str:
    """A token's bytes in GPT-2's printable file notation (e.g. ``b" the"`` -> ``"Ġthe"``)."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def _load_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise TokenizerError(f"{path}: not UTF-8 (byte offset {err.start})") from None
    except OSError as err:
        raise TokenizerError(read_error_line(str(path), err)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TokenizerError(f"{path}:{err.lineno}: invalid JSON: {err.msg} (column {err.colno})") from None


def _line_of(raw: str, key: str) -> int | None:
    for enc in (json.dumps(key, ensure_ascii=False), json.dumps(key)):
        i = raw.find(enc)
        if i != -1:
            return raw.count("\n", 0, i) + 1
    return None


def read_vocab_json(path: str | os.PathLike) -> dict[int, bytes]:
    """``{"Ġthe": 262, ...}`` -> ``{262: b" the", ...}``; errors name the file and line."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise TokenizerError(f"{path}: expected a JSON object mapping token strings to ids")
    decoder = _unicode_to_bytes()
    vocab: dict[int, bytes] = {}
    raw = None

    def where(key: str) -> str:
        nonlocal raw
        if raw is None:
            raw = path.read_text(encoding="utf-8")
        line = _line_of(raw, key)
        return f"{path}:{line}" if line else str(path)

    for key, idx in data.items():
        if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
            raise TokenizerError(f"{where(key)}: id of {key!r} is {idx!r}, expected an integer >= 0")
        try:
            token = bytes(decoder[c] for c in key)
        except KeyError as err:
            raise TokenizerError(
                f"{where(key)}: token {key!r} has character {err.args[0]!r}, which is not in "
                "GPT-2's byte-to-unicode alphabet"
            ) from None
        if idx in vocab:
            raise TokenizerError(f"{where(key)}: id {idx} is used twice")
        vocab[idx] = token
    return vocab


def read_merges_txt(
    path: str | os.PathLike, vocab: dict[int, bytes] | None = None, vocab_name: str = "vocab"
) -> list[tuple[bytes, bytes]]:
    """Read ``merges.txt`` (optional ``#version`` line, then ``a b`` per line; blank lines skipped).

    With ``vocab`` given, each merge's parts and result must be vocabulary entries.
    """
    path = Path(path)
    try:
        f = open(path, encoding="utf-8", newline="")
    except OSError as err:
        raise TokenizerError(read_error_line(str(path), err)) from None
    decoder = _unicode_to_bytes()
    known = set(vocab.values()) if vocab is not None else None
    merges: list[tuple[bytes, bytes]] = []
    with f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip() or (lineno == 1 and line.startswith("#version")):
                    continue
                parts = line.split(" ")
                if len(parts) != 2 or not parts[0] or not parts[1]:
                    raise TokenizerError(f"{path}:{lineno}: expected two tokens separated by one space, got {line!r}")
                try:
                    a, b = (bytes(decoder[c] for c in p) for p in parts)
                except KeyError as err:
                    raise TokenizerError(
                        f"{path}:{lineno}: character {err.args[0]!r} is not in GPT-2's byte-to-unicode alphabet"
                    ) from None
                if known is not None:
                    for t, shown in ((a, parts[0]), (b, parts[1]), (a + b, parts[0] + parts[1])):
                        if t not in known:
                            raise TokenizerError(f"{path}:{lineno}: token {shown!r} is not in {vocab_name}")
                merges.append((a, b))
        except UnicodeDecodeError as err:
            raise TokenizerError(f"{path}:{lineno + 1}: not UTF-8 ({err.reason})") from None
    return merges


def read_special_tokens(path: str | os.PathLike) -> list[str]:
    """The JSON list of special tokens that ``write_tokenizer_files`` wrote."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, list) or not all(isinstance(s, str) and s for s in data):
        raise TokenizerError(f"{path}: expected a JSON list of non-empty strings")
    return data


def write_tokenizer_files(
    directory: str | os.PathLike,
    vocab: dict[int, bytes],
    merges: list[tuple[bytes, bytes]],
    special_tokens: list[str],
) -> list[Path]:
    """Write vocab.json, merges.txt and special_tokens.json (each atomically) into ``directory``;
    returns their paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    vocab_json = {token_to_str(b): i for i, b in sorted(vocab.items())}
    if len(vocab_json) != len(vocab):
        raise TokenizerError("vocabulary has duplicate byte strings; cannot write vocab.json")
    # One entry per line (indent=0) keeps the file diffable and error messages line-precise.
    atomic_write_text(d / "vocab.json", json.dumps(vocab_json, ensure_ascii=False, indent=0) + "\n")
    lines = ["#version: 0.2"] + [f"{token_to_str(a)} {token_to_str(b)}" for a, b in merges]
    atomic_write_text(d / "merges.txt", "\n".join(lines) + "\n")
    atomic_write_text(d / SPECIAL_TOKENS_FILE, json.dumps(special_tokens, ensure_ascii=False) + "\n")
    return [d / "vocab.json", d / "merges.txt", d / SPECIAL_TOKENS_FILE]
