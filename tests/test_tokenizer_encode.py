"""Tokenizer encode/decode against tiktoken (the independent oracle), plus streaming, files, errors.

Everything here makes its own data: the textbook BPE trainer (cs336_basics.bpe, not the
fast cs336_basics.fast.bpe) produces merges from a few KB of varied text; tiktoken gets the same ranks.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import regex
import tiktoken

from cs336_basics.bpe import train_bpe_on_text
from cs336_basics.fast.tokenizer import Tokenizer, TokenizerError
from cs336_basics.interop.gpt2_files import bytes_to_unicode
from cs336_basics.tokenizer import Tokenizer as TextbookTokenizer
from cs336_basics.tokenizer import merge_pretoken

GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"

WORDS = (
    "the quick brown fox jumps over lazy dog it's don't we'll they've I'm you'd she's "
    "café naïve résumé Über straße Ålborg façade déjà vu 東京 日本語 中文字符 한국어 "
    "Привет мир γειά σου 🙂 🚀 👍🏽 1234 56789 3.14159 2024-01-01 $100 #tag @user "
    "def foo(x): return x**2 {a:[1,2]} <b>bold</b> e-mail well-known"
).split()


def make_corpus(n_words: int = 1500, seed: int = 0) -> str:
    rng = random.Random(seed)
    seps = [" ", " ", " ", " ", "  ", "\n", "\n\n", "\t", " \n", ", ", ". ", "   "]
    parts = []
    for i in range(n_words):
        parts.append(rng.choice(WORDS))
        parts.append(rng.choice(seps))
        if i % 97 == 96:
            parts.append(EOT)
    return "".join(parts)


def tiktoken_for(vocab: dict[int, bytes], specials: list[str]) -> tiktoken.Encoding:
    special_bytes = {s.encode() for s in specials}
    ranks = {b: i for i, b in vocab.items() if b not in special_bytes}
    return tiktoken.Encoding(
        name="test",
        pat_str=GPT2_PAT,
        mergeable_ranks=ranks,
        special_tokens={s: i for i, b in vocab.items() for s in specials if b == s.encode()},
    )


@pytest.fixture(scope="module")
def trained():
    vocab, merges = train_bpe_on_text(make_corpus(), 420, [EOT])
    return vocab, merges


@pytest.fixture(scope="module")
def tok(trained):
    return Tokenizer(*trained, special_tokens=[EOT])


@pytest.fixture(scope="module")
def oracle(trained):
    return tiktoken_for(trained[0], [EOT])


TEXTS = [
    "",
    " ",
    "a",
    "Hello, world! How are you?",
    "the quick brown fox jumps over the lazy dog",
    "It's, don't, we'll, they've, I'm, you'd, she's -- 'quoted' ''s",
    "café naïve résumé Über straße déjà vu",
    "東京 日本語のテキスト 中文字符 한국어 Привет мир",
    "emoji 🙂🚀 👍🏽👨‍👩‍👧 flags 🇫🇷",
    "   leading spaces",
    "trailing spaces   ",
    "tabs\t\tand\tnewlines\n\n\nend\n",
    "mixed \t \n  \r\n whitespace runs \u00a0\u00a0  nbsp \u3000 ideographic",
    "numbers 1234567890 3.14159 1,000,000 2024-01-01 ٣٤٥ ²³",
    "control \x00\x01\x1c\x1d\x7f chars and \ufeff bom",
    "code: def f(x):\n    return {'a': [1, 2, 3]}  # comment\n",
    "text<|endoftext|>more text<|endoftext|><|endoftext|> after",
    "<|endoftext|>",
    "<|endoftext",
    "<|endoftext|",
    make_corpus(400, seed=5),
]


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_tiktoken(tok, oracle, text):
    assert tok.encode(text) == oracle.encode(text, allowed_special="all")
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text", TEXTS)
def test_reference_encode_matches_tiktoken(trained, oracle, text):
    # The readable reference is right (tiktoken agrees) ...
    assert TextbookTokenizer(*trained, [EOT]).encode(text) == oracle.encode(text, allowed_special="all")


def test_fast_encode_equals_reference_on_random_text(trained, tok):
    # ... and the fast encoder equals it, on varied and random text.
    rng = random.Random(5)
    alphabet = list("abcxyz ABC  \t\n\r'sdmtlvre0123456789.,!?-_é日本🙂\u00a0\u3000\x1c\x85") + [EOT, "<|"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        assert tok.encode(text) == TextbookTokenizer(*trained, [EOT]).encode(text), repr(text)


def test_encode_pretoken_lowest_rank_first():
    # Hand-worked: "there" -> t h e r e; (t,h) rank 0 -> th e r e; (th,e) rank 1 -> the r e;
    # (e,r) has rank 2 but that "e" is already inside "the", so nothing is left to merge.
    ranks = {(b"t", b"h"): 0, (b"th", b"e"): 1, (b"e", b"r"): 2}
    assert merge_pretoken(b"there", ranks) == [b"the", b"r", b"e"]
    # Leftmost first on equal ranks: "aaa" with (a,a) -> [aa, a], not [a, aa].
    assert merge_pretoken(b"aaa", {(b"a", b"a"): 0}) == [b"aa", b"a"]
    assert merge_pretoken(b"", {}) == [] and merge_pretoken(b"x", {}) == [b"x"]


def test_encode_packed_equals_encode(tok):
    from array import array

    for text in TEXTS:
        for code in ("H", "I"):
            assert array(code, tok.encode_packed(text, code)).tolist() == tok.encode(text)


def test_encode_matches_tiktoken_random_text(tok, oracle):
    rng = random.Random(1)
    alphabet = list("abcxyz ABC  \t\n\r'sdmtlvre0123456789.,!?-_é日本🙂\u00a0\u3000\x1c") + [EOT, "<|", "|>"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        assert tok.encode(text) == oracle.encode(text, allowed_special="all"), repr(text)


def test_ascii_fast_path_equals_regex_on_all_ascii():
    from cs336_basics.fast.pretokenize import ascii_pretoken_re

    _ASCII_PRETOKEN_RE = ascii_pretoken_re(str)
    pat = regex.compile(GPT2_PAT)
    rng = random.Random(2)
    chars = [chr(i) for i in range(128)]
    for c in chars:
        for d in chars:
            s = f"{c}{d}{c} {d}"
            assert _ASCII_PRETOKEN_RE.findall(s) == pat.findall(s)
    for _ in range(2000):
        s = "".join(rng.choice(chars) for _ in range(rng.randint(0, 40)))
        assert _ASCII_PRETOKEN_RE.findall(s) == pat.findall(s), repr(s)


def test_long_text_blocks_match_tiktoken(tok, oracle):
    # Longer than one internal block, with a few non-ASCII characters so both regex paths run.
    mixed = make_corpus(50000, seed=3)
    ascii_only = mixed.encode("ascii", errors="ignore").decode()
    text = ascii_only + mixed + ascii_only
    assert len(text) > 3 * (1 << 18)
    assert tok.encode(text) == oracle.encode(text, allowed_special="all")


def test_roundtrip_every_byte_and_char(tok):
    text = "".join(chr(i) for i in range(256)) + "".join(chr(i) for i in range(0x370, 0x3FF))
    assert tok.decode(tok.encode(text)) == text
    # Every single byte is its own token and decodes (invalid UTF-8 alone -> U+FFFD).
    for b in range(256):
        (i,) = [k for k, v in tok.vocab.items() if v == bytes([b])]
        assert tok.decode([i]) == bytes([b]).decode("utf-8", errors="replace")
    assert tok.decode([]) == ""


def test_specials_appended_and_never_split(trained):
    vocab, merges = trained
    specials = ["<|pad|>", EOT, "<s>"]
    t = Tokenizer(vocab, merges, specials)
    assert t.token_id(EOT) == 0  # already in vocab
    assert t.token_id("<|pad|>") == len(vocab) and t.token_id("<s>") == len(vocab) + 1
    assert t.vocab_size == len(vocab) + 2 and t.eot_id == 0
    text = "x<s><|pad|>the<|endoftext|> <s>y"
    ids = t.encode(text)
    for s in specials:
        assert ids.count(t.token_id(s)) == text.count(s)
    assert t.decode(ids) == text
    # Without specials, the same string is ordinary text (several tokens, no special ids).
    plain = Tokenizer(vocab, merges)
    assert plain.eot_id == 0  # still a vocabulary entry (decoding it gives the marker back)
    assert Tokenizer({i: bytes([i]) for i in range(256)}, []).eot_id is None
    ids2 = plain.encode(EOT)
    assert len(ids2) > 1 and plain.decode(ids2) == EOT


def test_overlapping_specials_longest_wins(trained):
    vocab, merges = trained
    double = EOT + EOT
    for order in ([EOT, double], [double, EOT]):
        t = Tokenizer(vocab, merges, order)
        ids = t.encode(f"a{double}b{EOT}c{double}{EOT}")
        d, s = t.token_id(double), t.token_id(EOT)
        assert [i for i in ids if i in (d, s)] == [d, s, d, s]
        assert t.decode(ids) == f"a{double}b{EOT}c{double}{EOT}"


def _chunkings(text: str, rng: random.Random):
    yield [text]
    yield list(text)  # one character at a time
    yield text.splitlines(keepends=True)
    for _ in range(5):
        chunks, i = [], 0
        while i < len(text):
            n = rng.randint(1, 30)
            chunks.append(text[i : i + n])
            i += n
        yield chunks


@pytest.mark.parametrize("text", TEXTS)
def test_encode_iterable_equals_encode(tok, text):
    rng = random.Random(len(text))
    expected = tok.encode(text)
    for chunks in _chunkings(text, rng):
        assert list(tok.encode_iterable(chunks)) == expected


def test_encode_iterable_long_random_tricky(trained):
    # Specials containing whitespace and overlapping specials, split at random places.
    vocab, merges = trained
    specials = [EOT, EOT + EOT, "<end of text>", "\n\n<sep>"]
    t = Tokenizer(vocab, merges, specials)
    rng = random.Random(7)
    alphabet = list("ab   \t\n\n'sé日🙂\u00a0\x1c!1") + specials + ["<end", " of", "<|"]
    for _ in range(12):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20000)))
        expected = t.encode(text)
        assert t.decode(expected) == text
        for chunks in list(_chunkings(text, rng))[1:4]:
            assert list(t.encode_iterable(chunks)) == expected


@pytest.mark.parametrize("size", [1_200_000])
def test_encode_iterable_is_lazy_and_bounded(tok, tmp_path, size):
    """Peak traced memory while streaming a file stays under 1 MB. tracemalloc makes this slow, so
    the file here is 1.2 MB; at 5 MB the same check measured 0.23 MB extra (and 0.47 MB for a cold
    10k-vocab tokenizer on 5 MB of dictionary text): the buffer and caches are bounded."""
    import tracemalloc

    path = tmp_path / "big.txt"
    text = make_corpus(40000, seed=11)
    reps = size // len(text.encode()) + 1
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(reps):
            f.write(text)
    assert path.stat().st_size >= size
    tok.encode(text[:100000])  # warm the shared cache outside the measurement
    with open(path, encoding="utf-8") as f:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        n = 0
        for _ in tok.encode_iterable(f):
            n += 1
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert n > size // 5
    assert peak - base < 1_000_000, f"encode_iterable used {peak - base} extra bytes"


def test_decode_errors(tok):
    with pytest.raises(TokenizerError, match=r"token id 999999 .*0\.\.\d+"):
        tok.decode([1, 999999])
    with pytest.raises(TokenizerError, match="-1"):
        tok.decode([-1])
    with pytest.raises(ValueError):  # TokenizerError is a ValueError
        tok.decode([len(tok.vocab)])
    with pytest.raises(TokenizerError):
        tok.encode(b"bytes")  # type: ignore[arg-type]


def test_decode_replaces_invalid_utf8(tok):
    ids = tok.encode("é")  # two bytes; decoding only the first byte is invalid UTF-8
    b0 = [k for k, v in tok.vocab.items() if v == "é".encode()[:1]][0]
    assert tok.decode([b0]) == "\ufffd"
    assert tok.decode(ids) == "é"


# ---------------------------------------------------------------------- files
def test_save_load_roundtrip(tok, tmp_path):
    tok.save(tmp_path / "tok")
    for name in ("vocab.json", "merges.txt", "special_tokens.json"):
        assert (tmp_path / "tok" / name).exists()
    t2 = Tokenizer.from_dir(tmp_path / "tok")
    assert t2.vocab == tok.vocab and t2.merges == tok.merges and t2.special_tokens == tok.special_tokens
    for text in TEXTS:
        assert t2.encode(text) == tok.encode(text)
    t3 = Tokenizer.from_files(tmp_path / "tok" / "vocab.json", tmp_path / "tok" / "merges.txt", [EOT])
    assert t3.encode(TEXTS[-1]) == tok.encode(TEXTS[-1])
    assert list(tmp_path.glob("tok/*.tmp")) == []


def test_saved_files_load_in_hf_tokenizers(tok, tmp_path):
    import tokenizers  # a dev dependency: the "other tool" our files must load in
    from tokenizers import Regex, decoders, models, pre_tokenizers

    tok.save(tmp_path)
    hf = tokenizers.Tokenizer(models.BPE.from_file(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")))
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT2_PAT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    hf.decoder = decoders.ByteLevel()
    for text in TEXTS:
        if EOT in text or "\x00" in text:
            continue
        assert hf.encode(text).ids == tok.encode(text), repr(text)


def _gpt2_style_files(enc: tiktoken.Encoding, directory: Path) -> tuple[Path, Path]:
    """Write vocab.json/merges.txt the way OpenAI's GPT-2 release does, from a tiktoken Encoding
    (written here independently of Tokenizer.save): merges are recovered from the ranks."""
    b2u = bytes_to_unicode()
    assert len(b2u) == 256 and b2u[ord(" ")] == "Ġ" and b2u[ord("\n")] == "Ċ"

    def s(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    ranks = enc._mergeable_ranks
    vocab = {s(b): r for b, r in ranks.items()}
    vocab.update(enc._special_tokens)
    merges = []
    for b, r in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(b) == 1:
            continue
        # The split GPT-2's BPE would produce: encode b with ranks below r, must end in 2 parts.
        parts = [bytes([x]) for x in b]
        while len(parts) > 2:
            cands = [(ranks.get(parts[i] + parts[i + 1], 1 << 60), i) for i in range(len(parts) - 1)]
            rr, i = min(cands)
            assert rr < r
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        merges.append(f"{s(parts[0])} {s(parts[1])}")
    vp, mp = directory / "vocab.json", directory / "merges.txt"
    vp.write_text(json.dumps(vocab), encoding="utf-8")  # one line, ASCII-escaped, like GPT-2's
    mp.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vp, mp


def test_gpt2_convention_files_reproduce_tiktoken(trained, tmp_path):
    vocab, _ = trained
    # A GPT-2-shaped encoding: bytes first, specials last (like GPT-2's id 50256).
    ordered = sorted((i for i, b in vocab.items() if b != EOT.encode()))
    ranks = {vocab[i]: r for r, i in enumerate(ordered)}
    enc = tiktoken.Encoding(name="g", pat_str=GPT2_PAT, mergeable_ranks=ranks, special_tokens={EOT: len(ranks)})
    vp, mp = _gpt2_style_files(enc, tmp_path)
    t = Tokenizer.from_files(vp, mp, special_tokens=[EOT])
    assert t.eot_id == len(ranks) and t.vocab_size == len(ranks) + 1
    for text in TEXTS:
        assert t.encode(text) == enc.encode(text, allowed_special={EOT}), repr(text)
        assert t.decode(t.encode(text)) == text


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_malformed_vocab_files(tmp_path):
    good_merges = _write(tmp_path / "m.txt", "#version: 0.2\n")
    bad_json = _write(tmp_path / "v1.json", '{\n"a": 0,\n"b": 1,\n"c" 2\n}')
    with pytest.raises(TokenizerError, match=r"v1\.json:4: invalid JSON"):
        Tokenizer.from_files(bad_json, good_merges)
    not_obj = _write(tmp_path / "v2.json", "[1, 2]")
    with pytest.raises(TokenizerError, match=r"v2\.json: expected a JSON object"):
        Tokenizer.from_files(not_obj, good_merges)
    bad_char = _write(tmp_path / "v3.json", '{\n"a": 0,\n"a b": 1\n}')  # raw space is not in the alphabet
    with pytest.raises(TokenizerError, match=r"v3\.json:3: token 'a b' has character ' '"):
        Tokenizer.from_files(bad_char, good_merges)
    bad_id = _write(tmp_path / "v4.json", '{\n"a": 0,\n"b": "x"\n}')
    with pytest.raises(TokenizerError, match=r"v4\.json:3: id of 'b'"):
        Tokenizer.from_files(bad_id, good_merges)
    dup = _write(tmp_path / "v5.json", '{\n"a": 0,\n"b": 0\n}')
    with pytest.raises(TokenizerError, match=r"v5\.json:3: id 0 is used twice"):
        Tokenizer.from_files(dup, good_merges)
    with pytest.raises(TokenizerError, match=r"nope\.json: no such file"):
        Tokenizer.from_files(tmp_path / "nope.json", good_merges)
    with pytest.raises(TokenizerError, match="tokenizer directory not found"):
        Tokenizer.from_dir(tmp_path / "missing_dir")


def test_malformed_merges_files(tmp_path):
    vocab = {"a": 0, "b": 1, "ab": 2, "Ġ": 3}
    vp = _write(tmp_path / "vocab.json", json.dumps(vocab))
    ok = _write(tmp_path / "ok.txt", "#version: 0.2\na b\n\n")
    assert Tokenizer.from_files(vp, ok).merges == [(b"a", b"b")]
    three = _write(tmp_path / "m1.txt", "#version: 0.2\na b\na b c\n")
    with pytest.raises(TokenizerError, match=r"m1\.txt:3: expected two tokens"):
        Tokenizer.from_files(vp, three)
    one = _write(tmp_path / "m2.txt", "a b\nab\n")
    with pytest.raises(TokenizerError, match=r"m2\.txt:2: expected two tokens"):
        Tokenizer.from_files(vp, one)
    weird = _write(tmp_path / "m3.txt", "a b\na \u0100\u0000\n")
    with pytest.raises(TokenizerError, match=r"m3\.txt:2: character '\\x00'"):
        Tokenizer.from_files(vp, weird)
    unknown = _write(tmp_path / "m4.txt", "a b\nb a\n")
    with pytest.raises(TokenizerError, match=r"m4\.txt:2: token 'ba' is not in"):
        Tokenizer.from_files(vp, unknown)
    with pytest.raises(TokenizerError, match=r"missing\.txt: no such file"):
        Tokenizer.from_files(vp, tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"a b\n\xff\xfe\n")
    with pytest.raises(TokenizerError, match=r"bin\.txt:\d+: not UTF-8"):
        Tokenizer.from_files(vp, tmp_path / "bin.txt")


def test_vocab_without_some_bytes():
    t = Tokenizer({i: bytes([i]) for i in range(128)}, [])
    assert t.encode("ab") == [97, 98]
    with pytest.raises(TokenizerError, match="byte 0xc3 has no token"):
        t.encode("é")


def test_constructor_rejects_inconsistent_merges(trained):
    vocab, merges = trained
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        Tokenizer(vocab, merges + [(b"zz", b"qq")])
    with pytest.raises(TokenizerError):
        Tokenizer(vocab, merges, special_tokens=[""])


def test_with_project_trainer(tmp_path):
    """End to end with cs336_basics.bpe.train_bpe: ids equal tiktoken on the same ranks."""
    bpe = pytest.importorskip("cs336_basics.fast.bpe")
    path = tmp_path / "corpus.txt"
    path.write_text(make_corpus(3000, seed=9), encoding="utf-8")
    vocab, merges = bpe.train_bpe(path, 600, [EOT])
    t = Tokenizer(vocab, merges, [EOT])
    enc = tiktoken_for(vocab, [EOT])
    for text in TEXTS:
        assert t.encode(text) == enc.encode(text, allowed_special="all"), repr(text)


def test_textbook_encode_iterable_equals_encode_however_the_text_is_cut(trained):
    """The textbook tokenizer's stream: any cut of the text into pieces (mid-word, inside a special
    token, inside runs of spaces and newlines) gives encode's ids for the whole."""
    tok = TextbookTokenizer(*trained, [EOT, EOT + EOT])
    rng = random.Random(11)
    alphabet = list("ab cd  \n\n\t'sll ve.,!é日🙂\u00a0") + [EOT, "<|", "endof", "text|>"]
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 12))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert list(tok.encode_iterable(iter(pieces))) == tok.encode(text), repr(pieces)
    assert tok.decode(tok.encode("a" + EOT + EOT + "b")) == "a" + EOT + EOT + "b"
    assert tok.encode(EOT + EOT) == [tok.ids[(EOT + EOT).encode()]]  # the longest special wins
