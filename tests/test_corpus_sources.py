"""tokenize_data / train_bpe over many inputs: files, globs, JSON lines and arrays, gzip, HF data sets,
shards; and every bad input as one line, exit 2, nothing left behind.

References: the ids are checked against ``Tokenizer.encode`` of the documents joined by hand (each
followed by ``<|endoftext|>``), HF rows against the same records read from a JSONL file, BPE
training against training on one hand-joined text file.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cs336_basics import tokenize_data, train_bpe
from cs336_basics.fast.bpe import train_bpe as bpe_train
from cs336_basics.fast.tokenizer import Tokenizer
from cs336_basics.utils.errors import run_cli
from cs336_basics.utils.token_files import read_tokens_meta
from tests._corpus_utils import EOT, make_tokenizer, sentences, tok, tok_dir, tokenize  # noqa: F401  (fixtures and the CLI runner)


def write_jsonl(path: Path, rows: list[dict], gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def expected_ids(tok: Tokenizer, docs: list[str]) -> list[int]:
    return tok.encode("".join(d + EOT for d in docs))


def test_many_inputs_of_every_kind_equal_the_hand_joined_documents(tok_dir, tok, tmp_path):
    docs = sentences(40, seed=1)
    (tmp_path / "a.txt").write_text(EOT.join(docs[:10]) + EOT + "\n", encoding="utf-8")  # trailing blank doc: skipped
    with gzip.open(tmp_path / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write(EOT.join(docs[10:15]))
    write_jsonl(tmp_path / "c1.jsonl", [{"text": d, "id": i} for i, d in enumerate(docs[15:25])])
    write_jsonl(tmp_path / "c2.jsonl.gz", [{"text": d} for d in docs[25:30]], gz=True)
    (tmp_path / "d.json").write_text(json.dumps([{"text": d} for d in docs[30:]]), encoding="utf-8")
    out = tmp_path / "out" / "all.npy"
    out.parent.mkdir()
    rc = tokenize("--tokenizer", str(tok_dir), "--input", str(tmp_path / "a.txt"), str(tmp_path / "b.txt.gz"),
                  str(tmp_path / "c*.jsonl*"), str(tmp_path / "d.json"), "--output", str(out))  # fmt: skip
    assert rc == 0
    assert np.load(out).tolist() == expected_ids(tok, docs)
    meta = read_tokens_meta(out)
    assert meta["num_tokens"] == len(expected_ids(tok, docs)) and meta["documents"] == 40 and meta["mask"] is None


def test_several_text_fields_are_joined_by_a_newline(tok_dir, tok, tmp_path):
    rows = [{"title": "One", "text": "the cat sat."}, {"title": "Two", "text": "a dog ran."}]
    write_jsonl(tmp_path / "r.jsonl", rows)
    out = tmp_path / "t.npy"
    assert tokenize("--tokenizer", str(tok_dir), "--input", str(tmp_path / "r.jsonl"), "--text_field", "title,text",
                    "--output", str(out)) == 0  # fmt: skip
    assert np.load(out).tolist() == tok.encode(f"One\nthe cat sat.{EOT}Two\na dog ran.{EOT}")


def test_shards_are_cut_between_documents(tok_dir, tok, tmp_path):
    docs = sentences(60, seed=2)
    write_jsonl(tmp_path / "r.jsonl", [{"text": d} for d in docs])
    whole = tmp_path / "whole.npy"
    assert tokenize("--tokenizer", str(tok_dir), "--input", str(tmp_path / "r.jsonl"), "--output", str(whole)) == 0
    (tmp_path / "s_000099.npy").write_bytes(b"stale")  # an earlier, longer run of the same --output
    assert tokenize("--tokenizer", str(tok_dir), "--input", str(tmp_path / "r.jsonl"), "--output",
                    str(tmp_path / "s.npy"), "--shard_tokens", "100") == 0  # fmt: skip
    shards = sorted(tmp_path.glob("s_*.npy"))
    assert [p.name for p in shards] == [f"s_{i:06d}.npy" for i in range(len(shards))] and len(shards) > 3
    parts = [np.load(p) for p in shards]
    assert np.concatenate(parts).tolist() == np.load(whole).tolist()
    doc_lengths = [len(tok.encode(d + EOT)) for d in docs]
    ends = set(np.cumsum(doc_lengths).tolist())
    pos = 0
    for p, ids in zip(shards, parts):
        assert len(ids) <= 100 and ids[-1] == tok.eot_id
        pos += len(ids)
        assert pos in ends  # each shard ends where a document ends
        meta = read_tokens_meta(p)
        assert meta["num_tokens"] == len(ids) and meta["num_shards"] == len(shards)


def test_a_document_longer_than_a_shard_gets_its_own_shard_and_a_note(tok_dir, tok, tmp_path, capsys):
    short, long = "the cat sat.", " ".join(sentences(8, seed=4))
    write_jsonl(tmp_path / "r.jsonl", [{"text": short}, {"text": long}, {"text": short}])
    n_short, n_long = len(tok.encode(short + EOT)), len(tok.encode(long + EOT))
    assert n_short < 20 < n_long
    assert tokenize("--tokenizer", str(tok_dir), "--input", str(tmp_path / "r.jsonl"), "--output",
                    str(tmp_path / "s.npy"), "--shard_tokens", "20") == 0  # fmt: skip
    assert [len(np.load(tmp_path / f"s_{i:06d}.npy")) for i in range(3)] == [n_short, n_long, n_short]
    err = capsys.readouterr().err
    assert err == (
        f"note: {tmp_path / 's_000001.npy'} has {n_long:,} tokens, more than --shard_tokens 20: it holds one "
        "document that long (documents are never cut)\n"
    )


def test_a_missing_output_folder_is_made(tok_dir, tok, tmp_path):
    docs = sentences(6, seed=6)
    write_jsonl(tmp_path / "r.jsonl", [{"text": d} for d in docs])
    for out, shard in (
        (tmp_path / "new" / "deeper" / "s.npy", ["--shard_tokens", "30"]),
        (tmp_path / "new2" / "o.npy", []),
    ):
        assert (
            tokenize("--tokenizer", str(tok_dir), "--input", str(tmp_path / "r.jsonl"), "--output", str(out), *shard)
            == 0
        )
        ids = np.concatenate([np.load(p) for p in sorted(out.parent.glob("*.npy"))])
        assert ids.tolist() == expected_ids(tok, docs)


@pytest.mark.parametrize(
    "line, column",
    [
        ('{"text": "the cat sat on"', "at the end of the line, column 26"),  # cut short: 25 characters
        ('{"text": "the cat", }', "at column 21"),  # the "}" is character 21
        ('{"text": "the cat sat on', "(Unterminated string starting at column 10)"),
    ],
)
def test_json_errors_name_the_column_in_the_line(line, column, tok_dir, tmp_path, capsys):
    good = json.dumps({"text": "a dog ran."})
    (tmp_path / "a.jsonl").write_text(f"{good}\n{line}\n{good}\n", encoding="utf-8")
    rc = tokenize(
        "--tokenizer", str(tok_dir), "--input", str(tmp_path / "a.jsonl"), "--output", str(tmp_path / "o.npy")
    )
    err = capsys.readouterr().err
    assert rc == 2 and "a.jsonl:2: not valid JSON (" in err and column in err, err


def test_hf_datasets_local_files_and_save_to_disk_equal_the_jsonl_path(tok_dir, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")  # in the dev group: always there in CI
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    rows = [{"text": d, "n": i} for i, d in enumerate(sentences(30, seed=3))]
    write_jsonl(tmp_path / "r.jsonl", rows)
    ref = tmp_path / "ref.npy"
    assert tokenize("--tokenizer", str(tok_dir), "--input", str(tmp_path / "r.jsonl"), "--output", str(ref)) == 0
    want = np.load(ref).tolist()

    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "r.parquet"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"))
    for source, extra in [
        (tmp_path / "r.jsonl", []),
        (tmp_path / "r.parquet", ["--streaming"]),
        (tmp_path / "saved", []),
    ]:
        out = tmp_path / f"hf_{source.name}.npy"
        rc = tokenize("--tokenizer", str(tok_dir), "--hf_dataset", str(source), "--hf_split", "train",
                      "--output", str(out), *extra)  # fmt: skip
        assert rc == 0, source
        assert np.load(out).tolist() == want, source


def test_hf_without_datasets_says_how_to_install(tok_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    rc = tokenize("--tokenizer", str(tok_dir), "--hf_dataset", "roneneldan/TinyStories", "--output",
                  str(tmp_path / "o.npy"))  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "install with: uv sync --extra hf" in err


def _truncated_gzip(path: Path) -> Path:
    data = gzip.compress(("".join(json.dumps({"text": d}) + "\n" for d in sentences(200))).encode())
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    "case",
    ["no_match", "missing_file", "bad_json", "missing_field", "non_string", "truncated_gz", "not_object"],
)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, tok_dir, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    good = [json.dumps({"text": s}) for s in sentences(5)]
    inputs, expect = [str(d / "a.jsonl")], None
    if case == "no_match":
        inputs, expect = [str(d / "nothing_*.jsonl")], "nothing_*.jsonl: no file matches"
    elif case == "missing_file":
        inputs, expect = [str(d / "gone.txt"), str(d / "x.txt")], "gone.txt: no such file"
    elif case == "bad_json":
        (d / "a.jsonl").write_text("\n".join([*good[:2], '{"text": "cut', *good[2:]]) + "\n")
        expect = "a.jsonl:3: not valid JSON"
    elif case == "missing_field":
        (d / "a.jsonl").write_text("\n".join([*good[:3], json.dumps({"body": "x"})]) + "\n")
        expect = "a.jsonl:4: no field 'text'"
    elif case == "non_string":
        (d / "a.jsonl").write_text("\n".join([good[0], json.dumps({"text": 7})]) + "\n")
        expect = "a.jsonl:2: field 'text' is int, expected a string"
    elif case == "truncated_gz":
        inputs, expect = [str(_truncated_gzip(d / "a.jsonl.gz"))], "a.jsonl.gz: gzip data is truncated"
    elif case == "not_object":
        (d / "a.jsonl").write_text("\n".join([good[0], "[1, 2]"]) + "\n")
        expect = "a.jsonl:2: expected a JSON object"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for shard in ([], ["--shard_tokens", "20"]):
        rc = tokenize("--tokenizer", str(tok_dir), "--input", *inputs, "--output", str(out_dir / "o.npy"), *shard)
        err = capsys.readouterr().err
        assert rc == 2
        assert err.count("\n") == 1 and err.startswith("error: ") and expect in err, err
        assert list(out_dir.iterdir()) == [], "a partial output was left behind"


def test_one_plain_text_file_keeps_the_byte_range_path(tok_dir, tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text(EOT.join(sentences(20)), encoding="utf-8")
    calls = []
    real = tokenize_data.tokenize_file
    monkeypatch.setattr(tokenize_data, "tokenize_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert tokenize("--tokenizer", str(tok_dir), "--input", str(tmp_path / "a.txt"), "--output",
                    str(tmp_path / "a.npy")) == 0  # fmt: skip
    assert len(calls) == 1


def test_progress_line_names_megabytes_documents_tokens_rate_and_eta(capsys):
    prog = tokenize_data._DocProgress(lambda: 2_000_000, 8_000_000, None)
    prog(120, 34_567, final=True)
    line = capsys.readouterr().err
    for part in ("read 2.0/8.0 MB (25%)", "MB/s", "120 docs", "34,567 tokens", "ETA"):
        assert part in line, line


def test_train_bpe_on_many_inputs_equals_training_on_the_joined_text(tmp_path):
    docs = sentences(120, seed=5)
    (tmp_path / "a.txt").write_text(EOT.join(docs[:60]), encoding="utf-8")
    write_jsonl(tmp_path / "b.jsonl.gz", [{"text": d} for d in docs[60:]], gz=True)
    joined = tmp_path / "joined.txt"
    joined.write_text(EOT.join(docs), encoding="utf-8")
    vocab, merges = bpe_train(joined, 300, [EOT])
    rc = run_cli(train_bpe.main, ["--quiet", "--input", str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl.gz"),
                                  "--vocab_size", "300", "--output", str(tmp_path / "tok")])  # fmt: skip
    assert rc == 0
    got = Tokenizer.from_dir(tmp_path / "tok")
    assert got.merges == merges and got.vocab == vocab


def test_text_fields_are_parsed_and_joined_in_order():
    from cs336_basics.corpus.sources import CorpusError, Record, parse_fields, record_text

    assert parse_fields("title, text") == ["title", "text"]
    with pytest.raises(CorpusError, match="empty field name"):
        parse_fields("title,,text")
    rec = Record({"title": "T", "text": "body", "n": 3}, "x.jsonl:4")
    assert record_text(rec, ["title", "text"]) == "T\nbody"
    with pytest.raises(CorpusError, match=r"x.jsonl:4: field 'n' is int, expected a string"):
        record_text(rec, ["n"])
    with pytest.raises(CorpusError, match=r"x.jsonl:4: no field 'body'"):
        record_text(rec, ["body"])
