"""BPE training: the handout's worked example (the independent oracle), tie-breaking, special
tokens, parallel == serial, the fast trainer equal to the readable reference
(cs336_basics.bpe, the textbook's) on varied text, bad input, and the CLI."""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cs336_basics.bpe import learn_merges, train_bpe_on_text
from cs336_basics.fast import bpe
from cs336_basics.fast.bpe import BPEError, _rev_key, bpe_merges, count_pretokens, train_bpe
from cs336_basics.fast.pretokenize import PRETOKEN_RE, special_pattern
from cs336_basics.fast.pretokenize import split_on_specials as _split
from cs336_basics.utils.errors import run_cli

# In CI the examples are fixed (derandomize): a new counterexample found at random should be found
# here, locally, not turn a submission's CI red by chance.
IN_CI = bool(os.environ.get("CI"))

EOT = "<|endoftext|>"


def split_on_specials(text, specials):
    return _split(text, special_pattern(specials))


def varied_text(rng: random.Random, n_docs: int, specials: list[str]) -> str:
    vocab = [
        "the",
        "cat",
        "sat",
        "on",
        "mat",
        "don't",
        "we'll",
        "naïve",
        "café",
        "中文",
        "🙂",
        "1999",
        "42",
        "hello",
        "world",
        "lower",
        "lowest",
        "newer",
        "wider",
        "!!",
        "...",
        "’s",
    ]
    docs = []
    for _ in range(n_docs):
        words = [rng.choice(vocab) for _ in range(rng.randint(1, 40))]
        seps = [rng.choice([" ", " ", " ", "  ", "\n", ", ", "\t", "\n\n", ""]) for _ in words]
        docs.append("".join(w + s for w, s in zip(words, seps)))
    sep = specials[0] if specials else "\n"
    text = sep.join(docs)
    if len(specials) > 1:  # sprinkle the other specials, sometimes glued to words
        text = text.replace("mat", "mat" + specials[1])
    return text


def write(tmp_path: Path, text: str | bytes, name: str = "corpus.txt") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


# ----------------------------------------------------------------------------------------------
# Merge rule
# ----------------------------------------------------------------------------------------------
def test_handout_worked_example() -> None:
    corpus = "low low low low low lower lower widest widest widest newest newest newest newest newest newest"
    words = Counter(tuple(bytes([c]) for c in w.encode()) for w in corpus.split())
    assert bpe_merges(words, 6) == [
        (b"s", b"t"),
        (b"e", b"st"),
        (b"o", b"w"),
        (b"l", b"ow"),
        (b"w", b"est"),
        (b"n", b"e"),
    ]
    assert bpe_merges(words, 6) == learn_merges(words, 6)


def test_ties_go_to_the_lexicographically_greatest_pair() -> None:
    # Both pairs occur twice. As bytes, b"a" (0x61) > b"A" (0x41), so (a, a) beats (A, B) even
    # though "AB" < "aa" is not what e.g. a case-insensitive order would say.
    assert bpe_merges({(b"A", b"B"): 2, (b"a", b"a"): 2}, 1) == [(b"a", b"a")]
    # A prefix sorts first: (b"ab", b"c") > (b"a", b"bc") because b"ab" > b"a".
    assert bpe_merges({(b"a", b"bc"): 1, (b"ab", b"c"): 1}, 1) == [(b"ab", b"c")]
    # Second element decides when the first is equal; high bytes beat ASCII.
    assert bpe_merges({(b"x", b"y"): 3, (b"x", b"z"): 3, (b"x", b"\xff"): 3}, 3) == [
        (b"x", b"\xff"),
        (b"x", b"z"),
        (b"x", b"y"),
    ]
    # Frequency still wins over order.
    assert bpe_merges({(b"A", b"B"): 3, (b"z", b"z"): 2}, 1) == [(b"A", b"B")]


def test_reverse_key_orders_like_reversed_byte_tuples() -> None:
    rng = random.Random(0)
    toks = [bytes(rng.choice([0, 1, 97, 98, 255]) for _ in range(rng.randint(1, 4))) for _ in range(60)]
    pairs = list({(rng.choice(toks), rng.choice(toks)) for _ in range(400)})
    by_key = sorted(pairs, key=lambda p: _rev_key(p[0]) + _rev_key(p[1]))
    assert by_key == sorted(pairs, reverse=True)


def test_overlapping_and_repeated_pairs_match_reference() -> None:
    words = Counter({(b"a",) * 7: 3, (b"a", b"b") * 4: 2, (b"b", b"a", b"a", b"b"): 5, (b"a", b"a"): 1})
    assert bpe_merges(words, 20) == learn_merges(words, 20)


def test_random_words_match_reference() -> None:
    rng = random.Random(1)
    for _ in range(20):
        words = Counter()
        for _ in range(rng.randint(1, 60)):
            w = tuple(rng.choice([b"a", b"b", b"c", b"ab"]) for _ in range(rng.randint(1, 9)))
            words[w] += rng.randint(1, 4)
        assert bpe_merges(words, 40) == learn_merges(words, 40)


@pytest.fixture(params=["per_slot", "batched"])
def merge_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with every merge on the per-slot path, or every merge on the numpy batch path."""
    monkeypatch.setattr(bpe, "MANY_MIN_SLOTS", 10**9 if request.param == "per_slot" else 1)
    return request.param


def test_both_merge_paths_match_reference_on_overlaps_and_ties(merge_path: str) -> None:
    words = Counter({(b"a",) * 7: 3, (b"a", b"b") * 4: 2, (b"b", b"a", b"a", b"b"): 5, (b"a", b"a"): 1})
    words[(b"a", b"b", b"a", b"b", b"a")] += 4  # adjacent merges: "ba" between two "ab"s
    words[(b"x", b"a", b"a", b"a", b"y")] += 2  # an odd run
    assert bpe_merges(words, 30) == learn_merges(words, 30)
    ties = Counter({tuple(bytes([c]) for c in w): 1 for w in [b"abcd", b"dcba", b"bdac", b"cadb", b"zy"]})
    assert bpe_merges(ties, 12) == learn_merges(ties, 12)


def test_both_merge_paths_match_reference_on_random_words(merge_path: str) -> None:
    rng = random.Random(7)
    for _ in range(10):
        words = Counter()
        for _ in range(rng.randint(1, 80)):
            w = tuple(rng.choice([b"a", b"b", b"c", b"ab"]) for _ in range(rng.randint(1, 12)))
            words[w] += rng.randint(1, 5)
        assert bpe_merges(words, 60) == learn_merges(words, 60)


def long_tail_words(rng: random.Random, n: int) -> Counter:
    """Zipf-like word counts, a third of the words with a random suffix (each seen once or twice):
    most pairs are rare and die early, which exercises the heap's floor and its dead-pair cleanup."""
    stems = ["the", "of", "and", "ing", "tion", "er", "lower", "newest", "wide", "est"]
    words: Counter = Counter()
    for _ in range(n):
        w = rng.choice(stems[: 1 + int(rng.paretovariate(1.0)) % len(stems)])
        if rng.random() < 0.33:
            w += "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 6)))
        words[tuple(bytes([c]) for c in (" " + w).encode())] += 1
    return words


_LONG_TAIL = long_tail_words(random.Random(3), 1200)
_LONG_TAIL_REF: list = []


@pytest.mark.parametrize("floor_drop", [2, 4, 1 << 30])
def test_long_tail_words_match_reference(merge_path: str, floor_drop: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bpe, "_FLOOR_DROP", floor_drop)  # 1 << 30: every pair straight into the heap
    if not _LONG_TAIL_REF:  # the slow reference once for all six cases
        _LONG_TAIL_REF.append(learn_merges(_LONG_TAIL, 200))
    assert bpe_merges(_LONG_TAIL, 200) == _LONG_TAIL_REF[0]


@settings(derandomize=IN_CI, max_examples=40, deadline=None)
@given(
    corpus=st.dictionaries(
        st.lists(st.sampled_from([b"a", b"b", b"c", b"ab", b"\xff"]), min_size=1, max_size=10).map(tuple),
        st.integers(1, 6),
        max_size=40,
    ),
    batched=st.booleans(),
)
def test_property_fast_equals_reference(corpus: dict, batched: bool) -> None:
    old = bpe.MANY_MIN_SLOTS
    bpe.MANY_MIN_SLOTS = 1 if batched else 10**9
    try:
        assert bpe_merges(corpus, 50) == learn_merges(Counter(corpus), 50)
    finally:
        bpe.MANY_MIN_SLOTS = old


# ----------------------------------------------------------------------------------------------
# train_bpe on files
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("specials", [[], [EOT], [EOT, "<pad>"]])
def test_train_matches_reference_train_bpeer(tmp_path: Path, specials: list[str]) -> None:
    text = varied_text(random.Random(len(specials)), 120, specials)
    path = write(tmp_path, text)
    vocab_size = 256 + len(specials) + 120
    assert train_bpe(path, vocab_size, specials) == train_bpe_on_text(text, vocab_size, specials)


def _random_string(rng: random.Random, n: int) -> str:
    """Any code points a pre-token can contain: ASCII (controls too), Latin-1, CJK, emoji, spaces."""
    pools = [" \t\n\r\x0b\x0c", "abcXYZ019'.,!-_", "\x00\x1c\x7f\x85\u00a0\u3000", "éßñ中文🙂👍🏽"]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(n))


@pytest.mark.parametrize("kind", ["english", "whitespace_runs", "digits_punct", "unicode_emoji", "tie_heavy", "random"])
def test_fast_trainer_equals_reference(tmp_path: Path, kind: str) -> None:
    rng = random.Random(kind)
    specials = [EOT, "<pad>"]
    if kind == "english":
        text = varied_text(rng, 150, specials)
    elif kind == "whitespace_runs":
        text = "".join(rng.choice(["a", "bc", " ", "  ", "\n\n", " \t ", "\r\n", "   x"]) for _ in range(4000))
    elif kind == "digits_punct":
        text = "".join(rng.choice(["1999", "42", " 3.14", "!!", "...", "--", "$5", " (x)", EOT]) for _ in range(3000))
    elif kind == "unicode_emoji":
        text = "".join(
            rng.choice(["中文", " 🙂", "naïve", " café", "👍🏽👨‍👩‍👧", "\u00a0\u00a0", "日本語 ", EOT])
            for _ in range(3000)
        )
    elif kind == "tie_heavy":  # every pair equally frequent: only the tie-break decides
        text = " ".join("".join(rng.sample("abcdefghij", 10)) for _ in range(200))
        text = " ".join(w for w in {w: 1 for w in text.split()}) + EOT + " zyx"
    else:
        text = _random_string(rng, 6000)
    vocab_size = 256 + len(specials) + 150
    assert train_bpe(write(tmp_path, text), vocab_size, specials) == train_bpe_on_text(text, vocab_size, specials)


def test_vocab_layout_and_specials_never_merged(tmp_path: Path) -> None:
    specials = [EOT, "<pad>"]
    text = ("hello<|endoftext|>world<pad>hello<|endoftext|><|endoftext|>\n" * 200) + "x<pad>y"
    text += varied_text(random.Random(7), 300, specials)
    vocab, merges = train_bpe(write(tmp_path, text), 300, specials)
    assert len(vocab) == 300 and sorted(vocab) == list(range(300))
    assert vocab[0] == EOT.encode() and vocab[1] == b"<pad>"
    assert [vocab[2 + i] for i in range(256)] == [bytes([i]) for i in range(256)]
    assert [vocab[258 + i] for i in range(len(merges))] == [a + b for a, b in merges]
    for a, b in merges:
        # Without the split, "<|", "|>", "o<", ">w" ... would be frequent merges.
        assert b"<" not in a + b and b">" not in a + b and b"|" not in a + b, (a, b)


def test_stops_early_when_no_pairs_remain(tmp_path: Path) -> None:
    vocab, merges = train_bpe(write(tmp_path, "ab ab"), 1000, [])
    assert merges == [(b"a", b"b"), (b" ", b"ab")] and len(vocab) == 258
    vocab, merges = train_bpe(write(tmp_path, ""), 1000, [EOT])
    assert merges == [] and len(vocab) == 257


def test_parallel_equals_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    specials = [EOT, "<pad>"]
    path = write(tmp_path, varied_text(rng, 3000, specials))  # ~300 KB
    serial = train_bpe(path, 600, specials, num_workers=1)
    # Small blocks make every worker carry partial text across block boundaries, and a tiny
    # item limit makes the split-on-space shortcut expand its items many times.
    monkeypatch.setattr(bpe, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(bpe, "_MAX_SPACED", 5)
    assert train_bpe(path, 600, specials, num_workers=2) == serial
    assert count_pretokens(path, specials, 3) == count_pretokens(path, specials, 1)
    path2 = write(tmp_path, varied_text(rng, 3000, []), "nospecials.txt")
    assert count_pretokens(path2, [], 2) == count_pretokens(path2, [], 1)


def test_mixed_unicode_pieces_use_fast_and_slow_paths_consistently(tmp_path: Path) -> None:
    # Long documents with rare non-ASCII characters exercise the sub-piece split.
    rng = random.Random(4)
    words = ["alpha", "beta", "gamma", "1234", "don't", "  ", "\n"] * 30 + ["é", "\u00a0 ", "中", "\u3000"]
    text = EOT.join(" ".join(rng.choice(words) for _ in range(5000)) for _ in range(4))
    expected: Counter = Counter()
    for piece, is_special in split_on_specials(text, [EOT]):
        if not is_special:
            expected.update(t.encode() for t in PRETOKEN_RE.findall(piece))
    assert count_pretokens(write(tmp_path, text), [EOT], 1) == expected


@pytest.mark.parametrize("seed", range(4))
def test_pretoken_counter_matches_regex_on_awkward_whitespace(seed: int, monkeypatch) -> None:
    # Every whitespace combination around the spaces the shortcut splits on, in small sub-pieces.
    rng = random.Random(seed)
    atoms = [
        "a",
        "bc",
        "'s",
        "7",
        ".",
        " ",
        "  ",
        "\n",
        "\t",
        "\r",
        "\x0b",
        "\x0c",
        "\n ",
        " \n",
        "é",
        "\u00a0",
        " x",
        "<|endoftext|>",
    ]
    text = "".join(rng.choice(atoms) for _ in range(20_000))
    expected: Counter = Counter()
    for piece, is_special in split_on_specials(text, [EOT]):
        if not is_special:
            expected.update(t.encode() for t in PRETOKEN_RE.findall(piece))
    for sub in (64, 1 << 12):
        monkeypatch.setattr(bpe, "_SUBPIECE_BYTES", sub)
        counter = bpe._PretokenCounter(special_pattern([EOT.encode()]))
        assert counter.feed(text.encode()) is None
        assert counter.result() == expected
    # Plain English with single spaces takes the shortcut; same answer.
    words = "The cat sat on the mat.\nIt was, as cats go, a don't-care cat 42 times!".split(" ")
    text = " ".join(rng.choice(words) for _ in range(5000))
    counter = bpe._PretokenCounter(None)
    counter.feed(text.encode())
    assert counter.spaced and counter.result() == Counter(t.encode() for t in PRETOKEN_RE.findall(text))


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BPEError, match="nope.txt"):
        train_bpe(tmp_path / "nope.txt", 300, [EOT])
    with pytest.raises(BPEError, match=str(tmp_path)):
        train_bpe(tmp_path, 300, [EOT])  # a directory


def test_vocab_too_small(tmp_path: Path) -> None:
    path = write(tmp_path, "hello")
    with pytest.raises(BPEError, match=r"vocab_size 257 .* 258 initial"):
        train_bpe(path, 257, [EOT, "<pad>"])
    with pytest.raises(BPEError, match="integer"):
        train_bpe(path, 300.0, [EOT])
    assert isinstance(BPEError("x"), ValueError)


@pytest.mark.parametrize("specials", [[EOT, EOT], [""], "<|endoftext|>"])
def test_bad_special_tokens(tmp_path: Path, specials) -> None:
    with pytest.raises(BPEError):
        train_bpe(write(tmp_path, "hello"), 300, specials)


@pytest.mark.parametrize("workers", [1, 2])
def test_invalid_utf8_names_file_and_offset(tmp_path: Path, monkeypatch, workers: int) -> None:
    monkeypatch.setattr(bpe, "BLOCK_BYTES", 4096)
    good = varied_text(random.Random(5), 2000, [EOT]).encode()
    for offset, bad in [(150_000, b"\xff"), (len(good), b"\xe2\x82"), (0, b"\x92")]:
        data = good[:offset] + bad + good[offset:]
        path = write(tmp_path, data, "bad.txt")
        with pytest.raises(BPEError, match=rf"bad\.txt: invalid UTF-8 at byte offset {offset}$"):
            train_bpe(path, 300, [EOT], num_workers=workers)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def test_cli_trains_and_saves(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tokenizer = pytest.importorskip("cs336_basics.fast.tokenizer")
    from cs336_basics.train_bpe import main

    text = varied_text(random.Random(6), 200, [EOT])
    path = write(tmp_path, text)
    out = tmp_path / "tok"
    argv = ["--input", str(path), "--vocab_size", "400", "--special_tokens", EOT, "--output", str(out)]
    assert run_cli(main, argv) == 0
    printed = capsys.readouterr().out
    assert "merges" in printed and "Peak memory" in printed and "Longest tokens" in printed
    tok = tokenizer.Tokenizer.from_dir(out)
    vocab, merges = train_bpe(path, 400, [EOT])
    assert tok.vocab == vocab and tok.merges == merges
    sample = text[:500]
    assert tok.decode(tok.encode(sample)) == sample


def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cs336_basics.train_bpe import main

    argv = ["--input", str(tmp_path / "missing.txt"), "--vocab_size", "300", "--output", str(tmp_path / "o")]
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "missing.txt" in err[0]


def test_textbook_docstring_examples_hold():
    """The textbook trainer's worked example (the handout's) and the tokenizer's, run as doctests."""
    import doctest

    from cs336_basics import bpe as textbook_bpe
    from cs336_basics import tokenizer as textbook_tokenizer

    assert doctest.testmod(textbook_bpe).attempted >= 2 and doctest.testmod(textbook_bpe).failed == 0
    assert doctest.testmod(textbook_tokenizer).failed == 0
