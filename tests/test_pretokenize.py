"""Pre-tokenization pieces: the ASCII fast path, safe cuts and chunk boundaries never change what
the GPT-2 regex (PRETOKEN_RE, the reference) produces on the whole text."""

from __future__ import annotations

import io
import random
import string
from collections import Counter

import regex

from cs336_basics.fast.pretokenize import (
    ASCII_WS,
    PRETOKEN_RE,
    ascii_pretoken_re,
    find_chunk_boundaries,
    first_safe_cut,
    last_safe_cut,
    special_pattern,
)
from cs336_basics.fast.pretokenize import split_on_specials as _split

ASCII_PRETOKEN_RE = ascii_pretoken_re(bytes)


def split_on_specials(text, specials):
    return list(_split(text, special_pattern(specials)))


EOT = "<|endoftext|>"
# Characters that exercise every branch of the pattern, incl. Unicode letters/digits/whitespace
# (U+00A0, U+3000, U+2028), contractions, and ASCII control characters that are *not* \s.
ALPHABET = list("aZ09 \t\n\r\x0b\x0c'sdmtlvre.,!?-_$\x00\x1c\x7f") + [
    "é",
    "ß",
    "中",
    "٣",
    "\u00a0",
    "\u3000",
    "\u2028",
    "🙂",
    "’",
]


WORDS = ["the", " cat", "don't", "we'll", "  ", "\n\n", "1999", " naïve", "I'M", "'re"]


def random_text(rng: random.Random, n: int, alphabet: list[str] = ALPHABET) -> str:
    words = WORDS if not all(c.isascii() for c in alphabet) else [w for w in WORDS if w.isascii()]
    out = []
    while sum(map(len, out)) < n:
        out.append(rng.choice(words) if rng.random() < 0.4 else rng.choice(alphabet))
    return "".join(out)


def pretokens(text: str) -> list[str]:
    return PRETOKEN_RE.findall(text)


def test_ascii_classes_match_unicode_pattern_on_all_ascii() -> None:
    for i in range(128):
        ch = chr(i)
        # The classes ASCII_PRETOKEN_RE spells out: [A-Za-z], [0-9], [ \t\n\r\v\f].
        assert bool(regex.fullmatch(r"\p{L}", ch)) == (ch in string.ascii_letters), repr(ch)
        assert bool(regex.fullmatch(r"\p{N}", ch)) == (ch in string.digits), repr(ch)
        assert bool(regex.fullmatch(r"\s", ch)) == (ch in " \t\n\r\x0b\x0c"), repr(ch)
        assert (ch in ASCII_WS) == (ch in " \t\n\r\x0b\x0c")


def test_ascii_fast_path_equals_regex() -> None:
    rng = random.Random(0)
    ascii_alphabet = [c for c in ALPHABET if c.isascii()]
    for _ in range(300):
        text = random_text(rng, rng.randint(0, 200), ascii_alphabet)
        assert [t.decode() for t in ASCII_PRETOKEN_RE.findall(text.encode())] == pretokens(text)


def test_docstring_example() -> None:
    assert pretokens("Hello, world!  it's 2024") == ["Hello", ",", " world", "!", " ", " it", "'s", " 2024"]


def test_split_on_specials_longest_first() -> None:
    specials = [EOT, EOT + EOT]
    assert split_on_specials("a" + EOT * 3 + "b", specials) == [
        ("a", False),
        (EOT * 2, True),
        (EOT, True),
        ("b", False),
    ]
    assert special_pattern([]) is None
    assert split_on_specials("", [EOT]) == []


def check_cut(text: str, cut: int, specials: list[str]) -> None:
    """Cutting the UTF-8 bytes at ``cut`` changes neither the special-token split nor pre-tokens."""
    data = text.encode()
    left, right = data[:cut].decode(), data[cut:].decode()  # a cut never lands inside a character

    def parts(t: str) -> list[tuple[str, bool]]:
        return [
            (p, True) if s else (tok, False)
            for p, s in split_on_specials(t, specials)
            for tok in ([p] if s else pretokens(p))
        ]

    assert parts(left) + parts(right) == parts(text), (text, cut)


def test_last_safe_cut_never_changes_pretokens() -> None:
    rng = random.Random(1)
    specials_sets = [[], [EOT], [EOT, EOT + EOT], ["<a b>", "x y"]]  # specials may contain spaces
    checked = 0
    for trial in range(400):
        specials = specials_sets[trial % len(specials_sets)]
        alphabet = ALPHABET + specials * 3
        text = random_text(rng, rng.randint(1, 300), alphabet)
        data = text.encode()
        cut = last_safe_cut(data, [s.encode() for s in specials], window=rng.choice([8, 64, 1 << 16]))
        if cut is None:
            continue
        assert 0 < cut < len(data)
        check_cut(text, cut, specials)
        checked += 1
    assert checked > 300


def test_first_safe_cut_never_changes_pretokens_and_str_equals_bytes() -> None:
    rng = random.Random(3)
    specials_sets = [[], [EOT], [EOT, EOT + EOT], ["<a b>", "x y", "\n\n<sep>"]]
    found = 0
    for trial in range(400):
        specials = specials_sets[trial % len(specials_sets)]
        text = random_text(rng, rng.randint(1, 200), ALPHABET + specials * 3)
        data = text.encode()
        lo = rng.randint(0, len(text))
        p = first_safe_cut(text, lo, None, specials)
        pb = first_safe_cut(data, len(text[:lo].encode()), None, [s.encode() for s in specials])
        assert pb == (None if p is None else len(text[:p].encode())), (text, lo)
        # (last_safe_cut keeps clear of the end by the longest special's length, counted in the
        # buffer's units, so str and bytes may pick different, equally safe, cuts.)
        q = last_safe_cut(text, specials)
        qb = last_safe_cut(data, [s.encode() for s in specials])
        for cut in (pb, qb, None if q is None else len(text[:q].encode())):
            if cut is not None:
                assert 0 < cut < len(data)
                check_cut(text, cut, specials)
                found += 1
    assert found > 400


def test_cuts_after_non_ascii_letters_and_at_special_starts() -> None:
    assert first_safe_cut("café au", 0) == 4  # after "é", before the space
    assert first_safe_cut("café au".encode(), 0) == 5
    assert first_safe_cut("ab<|endoftext|>cd", 0, None, [EOT]) == 2
    assert first_safe_cut("ab<|endoftext|>cd", 3, None, [EOT]) is None  # the end of a special is not a cut
    # A whitespace cut inside a special that contains whitespace is not a cut.
    assert first_safe_cut("a<x y>b c", 0, None, ["<x y>"]) == 1
    assert first_safe_cut("a<x y>b c", 2, None, ["<x y>"]) == 7


def test_unicode_whitespace_is_not_a_cut_point() -> None:
    # U+00A0 ends in byte 0xA0 (not ASCII whitespace) but is whitespace to the regex: cutting
    # between it and the following spaces would change the pre-tokens.
    text = "x\u00a0   b"
    assert last_safe_cut(text.encode()) is None
    assert pretokens(text) == ["x", "\u00a0  ", " b"]


def test_chunk_boundaries_preserve_pretoken_counts() -> None:
    rng = random.Random(2)
    for specials in ([], [EOT], [EOT, "<pad>"]):
        docs = [random_text(rng, rng.randint(0, 400), ALPHABET) for _ in range(300)]
        text = (specials[0] if specials else "").join(docs)
        data = text.encode()
        for n in (1, 2, 7, 50):
            bounds = find_chunk_boundaries(io.BytesIO(data), n, [s.encode() for s in specials])
            assert bounds[0] == 0 and bounds[-1] == len(data) and bounds == sorted(set(bounds))
            whole: Counter = Counter()
            chunked: Counter = Counter()
            for p, s in split_on_specials(text, specials):
                whole.update([p] if s else pretokens(p))
            for a, b in zip(bounds, bounds[1:]):
                piece = data[a:b].decode()  # raises if a boundary split a character
                if specials and a > 0:
                    assert piece.startswith(tuple(specials)) or piece[0].isspace()
                for p, s in split_on_specials(piece, specials):
                    chunked.update([p] if s else pretokens(p))
            assert chunked == whole


def test_chunk_boundaries_fall_back_to_whitespace_when_specials_are_rare() -> None:
    # 3 MiB with a single special token near the start: boundaries still spread out.
    data = (EOT + "hello world " * 270_000).encode()
    bounds = find_chunk_boundaries(io.BytesIO(data), 4, [EOT.encode()])
    assert len(bounds) == 5
    for b in bounds[1:-1]:
        assert data[b - 1 : b] in (b"o", b"d") and data[b : b + 1] == b" "


def test_chunk_boundaries_degenerate_inputs() -> None:
    assert find_chunk_boundaries(io.BytesIO(b""), 4) == [0, 0]
    assert find_chunk_boundaries(io.BytesIO(b"abc"), 1) == [0, 3]
    assert find_chunk_boundaries(io.BytesIO(b"x" * 1000), 4) == [0, 1000]  # no cut point at all


def test_textbook_rules_are_the_ones_the_fast_module_uses():
    """The fast module re-exports the textbook's pattern and special-token split (written once)."""
    import doctest

    from cs336_basics import pretokenize as textbook
    from cs336_basics.fast import pretokenize as fast

    assert fast.PRETOKEN_RE is textbook.PRETOKEN_RE and fast.split_on_specials is textbook.split_on_specials
    assert doctest.testmod(textbook).failed == 0
    pat = textbook.special_pattern(["<|a|>", "<|a|><|a|>"])
    assert list(textbook.split_on_specials("x<|a|><|a|>y<|a|>", pat)) == [
        ("x", False), ("<|a|><|a|>", True), ("y", False), ("<|a|>", True)
    ]  # fmt: skip
