"""tokenizer.json both ways, against HF ``tokenizers`` and ``transformers.AutoTokenizer`` as references."""

import json
import random
import unicodedata

import pytest
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from cs336_basics.fast.bpe import train_bpe
from cs336_basics.fast.pretokenize import GPT2_PAT, PRETOKEN_RE
from cs336_basics.fast.tokenizer import Tokenizer
from cs336_basics.interop.gpt2_files import TokenizerError, bytes_to_unicode
from cs336_basics.interop.hf_tokenizer_json import HF_BYTELEVEL_PAT

EOT = "<|endoftext|>"
PAD = "<|pad|>"

TEXTS = [
    "",
    "Hello, world! It's 2024, isn't it? They're here; we've won; I'd go; you'll see; I'm ok.",
    "héllo wörld, ça va? Ñandú, naïve café, Ærøskøbing, Αθήνα, Москва",
    "日本語のテキスト、中文文本。한국어 텍스트",
    "emoji 🙂👍🏽 family 👨\u200d👩\u200d👧 flags 🇫🇷🇯🇵 ✨",
    "   leading and  multiple   spaces\t\ttabs\n\n\nnewlines  \n \r\n trailing   ",
    "numbers 1234567 3.14159 -42 1e10 ١٢٣ ½ ²",
    f"a{EOT}b {EOT} c{EOT}{EOT}d {PAD}{EOT} <|endoftext|",
    "\u00a0nbsp\u3000ideographic\u2028line\u2029para\x0bvt\x0cff\x1cfs\x85nel",
    "mixed ASCII and ünïcödé 123 🙂\n'''quotes''' \"double\" (parens) [brackets] {braces} #$%&*@^_`|~",
    "\x00\x01 control chars \x7f and a lone \ud7ff?",
]


def _corpus() -> str:
    rng = random.Random(0)
    words = " ".join(TEXTS).split()
    docs = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(60)]
    return f"\n{EOT}\n".join(docs + TEXTS)


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    (d / "corpus.txt").write_text(_corpus(), encoding="utf-8")
    vocab, merges = train_bpe(str(d / "corpus.txt"), 600, [EOT, PAD])
    tok = Tokenizer(vocab, merges, [EOT, PAD])
    tok.save(d / "saved")
    return tok, d / "saved"


def test_hf_tokenizers_encode_like_ours(ours):
    tok, d = ours
    hf = HFTokenizer.from_file(str(d / "tokenizer.json"))
    assert hf.get_vocab_size() == tok.vocab_size
    for text in TEXTS:
        ids = tok.encode(text)
        assert hf.encode(text).ids == ids, text
        assert hf.decode(ids, skip_special_tokens=False) == text == tok.decode(ids)


def test_autotokenizer_loads_the_directory(ours):
    from transformers import AutoTokenizer

    tok, d = ours
    hf = AutoTokenizer.from_pretrained(str(d))
    assert hf.eos_token == EOT and hf.eos_token_id == tok.eot_id
    for text in TEXTS:
        ids = tok.encode(text)
        assert hf(text)["input_ids"] == ids, text  # no BOS/EOS added
        assert hf.decode(ids) == text


def test_our_tokenizer_json_reads_back_identically(ours):
    tok, d = ours
    back = Tokenizer.from_files(d / "tokenizer.json")
    assert back.vocab == tok.vocab and back.merges == tok.merges and back.special_tokens == tok.special_tokens


def test_pretokenizer_matches_on_every_sampled_code_point():
    """Our GPT-2 regex (``regex`` module) vs HF's Split + ByteLevel and HF's ByteLevel regex
    (Oniguruma), character class by character class: each code point between letters, digits and
    spaces. Code points unassigned in this Python's Unicode tables are left out: there the two regex
    engines' Unicode versions differ."""
    b2u = bytes_to_unicode()
    split = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT2_PAT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    split_hf_pat = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(HF_BYTELEVEL_PAT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    rng = random.Random(0)
    points = list(range(0x3000)) + rng.sample(range(0x3000, 0x110000), 6000)
    chars = [chr(c) for c in points if not 0xD800 <= c < 0xE000 and unicodedata.category(chr(c)) != "Cn"]
    text = "".join(f"{c}a{c}1{c} {c}  {c}'s{c}\n" for c in chars)
    want = ["".join(b2u[b] for b in m.encode()) for m in PRETOKEN_RE.findall(text)]
    for pre in (split, split_hf_pat, byte_level):
        assert [t for t, _ in pre.pre_tokenize_str(text)] == want


def _hf_trained(tmp_path, **kw) -> HFTokenizer:
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    hf.train_from_iterator(_corpus().split("\n"), trainer)
    return hf


def test_hf_trained_tokenizer_json_encodes_as_hf_does(tmp_path):
    hf = _hf_trained(tmp_path)
    d = tmp_path / "hf"
    d.mkdir()
    hf.save(str(d / "tokenizer.json"))
    tok = Tokenizer.from_dir(d)  # no special_tokens.json: read from tokenizer.json
    assert tok.special_tokens == [EOT] and tok.eot_id == hf.token_to_id(EOT)
    for text in TEXTS:
        ids = hf.encode(text).ids
        assert tok.encode(text) == ids, text
        assert tok.decode(ids) == text


def _refused(tmp_path, hf: HFTokenizer | dict, *fragments: str) -> None:
    d = tmp_path / "refused"
    d.mkdir(exist_ok=True)
    path = d / "tokenizer.json"
    if isinstance(hf, dict):
        path.write_text(json.dumps(hf), encoding="utf-8")
    else:
        hf.save(str(path))
    with pytest.raises(TokenizerError) as exc:
        Tokenizer.from_dir(d)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg, msg
    for frag in fragments:
        assert frag in msg, msg


def test_refuses_other_tokenizers(tmp_path):
    wp = HFTokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    _refused(tmp_path, wp, "model type 'WordPiece'")
    _refused(tmp_path, HFTokenizer(models.Unigram([("a", -1.0), ("b", -2.0)])), "model type 'Unigram'")

    hf = _hf_trained(tmp_path)
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    _refused(tmp_path, hf, "pre-tokenizer Whitespace is not GPT-2's byte-level one")
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\s+|\w+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    _refused(tmp_path, hf, "pre-tokenizer Sequence[Split, ByteLevel]")
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    _refused(tmp_path, hf, "add_prefix_space")
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.normalizer = normalizers.NFC()
    _refused(tmp_path, hf, "normalizer NFC")


def test_refuses_bpe_options_and_bad_json(tmp_path):
    good = _hf_trained(tmp_path)
    data = json.loads(good.to_str())
    data["model"]["dropout"] = 0.1
    _refused(tmp_path, data, "dropout=0.1")
    data = json.loads(good.to_str())
    data["model"]["continuing_subword_prefix"] = "##"
    _refused(tmp_path, data, "continuing_subword_prefix")
    d = tmp_path / "broken"
    d.mkdir()
    (d / "tokenizer.json").write_text('{"model": ', encoding="utf-8")
    with pytest.raises(TokenizerError, match="invalid JSON"):
        Tokenizer.from_dir(d)
