"""One iterator of records over many inputs: files, globs, plain text, JSON lines, gzip, HF data sets.

    src = Sources(["data/owt_*.jsonl.gz", "extra.txt"])
    for rec in src.records():          # rec.value: a str (plain text) or a dict (a JSON record)
        text = record_text(rec, ["title", "text"])

What each input kind yields:

* plain text (any other suffix): one record per document, documents separated by
  ``<|endoftext|>`` as in the course's TinyStories files; documents of whitespace only are skipped.
* ``.jsonl``: one JSON object per line (blank lines skipped); ``.json``: a JSON array of objects,
  or JSON lines (decided by the first character). Records are addressed as ``FILE:LINE`` (JSON
  lines) or ``FILE: record N`` (arrays), so every error can name where it is.
* ``.gz`` of either: decompressed on the fly (``gzip``), same rules; a file cut short is an error,
  not a silently shorter corpus.
* a Hugging Face data set (:func:`hf_records`): by hub name, a ``save_to_disk`` directory, or local
  data files (JSON lines, JSON, parquet, CSV), through ``datasets.load_dataset`` / ``load_from_disk``.

Every problem is a :class:`~cs336_basics.corpus.layout.CorpusError` with one line naming the file
and line/record. The iterators are lazy: a 40 GB corpus streams through in constant memory.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cs336_basics.corpus.layout import CorpusError
from cs336_basics.interop.gpt2_files import EOT
from cs336_basics.utils.errors import os_reason

JSON_SUFFIXES = (".jsonl", ".json")
_BLOCK_CHARS = 1 << 20  # plain text is read this many characters at a time


@dataclass(frozen=True)
class Record:
    """One document or JSON record and where it came from (for error messages)."""

    value: str | dict[str, Any]
    where: str


def parse_fields(text_field: str) -> list[str]:
    """``"title,text"`` -> ``["title", "text"]`` (the fields a document is made of, in order)."""
    fields = [f.strip() for f in text_field.split(",")]
    if not all(fields):
        raise CorpusError(f"--text_field {text_field!r}: empty field name (use e.g. --text_field text or title,text)")
    return fields


def record_text(rec: Record, fields: Sequence[str]) -> str:
    """The document of ``rec``: plain text as is; for a JSON record its ``fields`` joined by a newline."""
    if isinstance(rec.value, str):
        return rec.value
    parts = []
    for name in fields:
        if name not in rec.value:
            have = ", ".join(map(str, list(rec.value)[:8])) or "none"
            raise CorpusError(f"{rec.where}: no field {name!r} (fields: {have}); choose one with --text_field")
        value = rec.value[name]
        if not isinstance(value, str):
            raise CorpusError(f"{rec.where}: field {name!r} is {type(value).__name__}, expected a string")
        parts.append(value)
    return "\n".join(parts)


def input_kind(path: str | os.PathLike) -> str:
    """``"json"`` for .jsonl/.json (also .gz'd), else ``"text"``."""
    name = Path(path).name.lower().removesuffix(".gz")
    return "json" if name.endswith(JSON_SUFFIXES) else "text"


def is_gzip(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(".gz")


def expand_inputs(patterns: Sequence[str], flag: str = "--input") -> list[Path]:
    """Files named by ``patterns`` (paths and globs), in the given order; globs sorted. A glob that
    matches nothing, a missing or unreadable file, or a directory is an error."""
    out: list[Path] = []
    for pat in patterns:
        if glob.has_magic(pat):
            found = sorted(Path(q) for q in glob.glob(pat, recursive=True) if Path(q).is_file())
            if not found:
                raise CorpusError(f"{flag} {pat}: no file matches this pattern")
            out += found
            continue
        p = Path(pat)
        if not p.exists():
            raise CorpusError(f"{flag} {p}: no such file")
        if p.is_dir():
            raise CorpusError(f"{flag} {p}: is a directory (name its files, e.g. with a glob like {p}/*.jsonl)")
        out.append(p)
    for p in out:
        if not os.access(p, os.R_OK):
            raise CorpusError(f"{flag} {p}: cannot read (permission denied)")
    return out


class Sources:
    """Records from a list of input files, read lazily one after another.

    ``bytes_done`` / ``total_bytes`` measure progress in bytes on disk (compressed bytes for .gz).
    """

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        self.paths = [Path(p) for p in paths]
        self.total_bytes = sum(p.stat().st_size for p in self.paths)
        self._done_before = 0  # bytes of the files already finished
        self._raw: io.BufferedReader | None = None  # the file being read (its position = progress)

    @property
    def bytes_done(self) -> int:
        raw = self._raw
        try:
            return self._done_before + (raw.tell() if raw is not None and not raw.closed else 0)
        except (OSError, ValueError):
            return self._done_before

    def records(self) -> Iterator[Record]:
        for path in self.paths:
            try:
                with open(path, "rb") as raw:
                    self._raw = raw
                    stream = gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip(path) else raw
                    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
                    reader = _json_records if input_kind(path) == "json" else _text_documents
                    yield from _guarded(path, reader(path, text))
            except OSError as err:
                raise CorpusError(f"{path}: cannot read ({os_reason(err)})") from None
            finally:
                self._raw = None
            self._done_before += path.stat().st_size


def _guarded(path: Path, it: Iterator[Record]) -> Iterator[Record]:
    """Turn decoding failures while reading ``path`` into one-line errors naming where they happened."""
    last = "its start"
    try:
        for rec in it:
            rest = rec.where.removeprefix(f"{path}").lstrip(": ")
            last = f"line {rest}" if rest.isdigit() else rest or last
            yield rec
    except EOFError:
        raise CorpusError(f"{path}: gzip data is truncated (the file was cut short) after {last}") from None
    except gzip.BadGzipFile as err:
        raise CorpusError(f"{path}: not a valid gzip file ({err})") from None
    except zlib.error as err:
        raise CorpusError(f"{path}: corrupt gzip data after {last} ({err})") from None
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: not UTF-8 text after {last} ({err.reason})") from None


def _text_documents(path: Path, text: io.TextIOWrapper) -> Iterator[Record]:
    """Documents separated by ``<|endoftext|>``, read in blocks. A separator may span two blocks, so
    the last few characters of each block are kept apart and joined to the next one; a document
    without any separator is gathered as a list of blocks (no quadratic re-copying)."""
    keep = len(EOT) - 1
    pending: list[str] = []  # the current document so far; its last piece is at most ``keep`` long
    n = 0
    while True:
        block = text.read(_BLOCK_CHARS)
        if not block:
            docs = ["".join(pending)]
        else:
            tail = pending.pop() if pending else ""
            parts = (tail + block).split(EOT)
            docs = []
            if len(parts) > 1:
                docs = ["".join(pending) + parts[0], *parts[1:-1]]
                pending = []
            last = parts[-1]
            pending += [last[:-keep], last[-keep:]] if len(last) > keep else [last]
        for doc in docs:
            if doc.strip():
                n += 1
                yield Record(doc, f"{path}: document {n}")
        if not block:
            return


def _json_records(path: Path, text: io.TextIOWrapper) -> Iterator[Record]:
    """JSON lines, or (a ``.json`` file starting with ``[``) one JSON array of objects."""
    first = ""
    lineno = 0
    lines = iter(text)
    for line in lines:  # find the first non-blank character
        lineno += 1
        if line.strip():
            first = line
            break
    if not first:
        return
    if first.lstrip().startswith("["):
        body = first + "".join(lines)
        try:
            data = json.loads(body)
        except json.JSONDecodeError as err:
            raise _not_json(f"{path}:{lineno + err.lineno - 1}", err, err.colno) from None
        if not isinstance(data, list):
            raise CorpusError(f"{path}: expected a JSON array of records")
        for i, value in enumerate(data, 1):
            yield _as_record(value, f"{path}: record {i}")
        return
    yield _parse_line(path, lineno, first)
    for line in lines:
        lineno += 1
        if line.strip():
            yield _parse_line(path, lineno, line)


def _parse_line(path: Path, lineno: int, line: str) -> Record:
    where = f"{path}:{lineno}"
    line = line.rstrip("\r\n")  # else a record cut short is "wrong" at column 1 of the line after it
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        raise _not_json(where, err, err.pos + 1, at_end=err.pos >= len(line)) from None
    return _as_record(value, where)


def _not_json(where: str, err: json.JSONDecodeError, column: int, at_end: bool = False) -> CorpusError:
    at = "the end of the line, column" if at_end else "column"  # ("... starting at" ends some messages)
    return CorpusError(f"{where}: not valid JSON ({err.msg.removesuffix(' at')} at {at} {column})")


def _as_record(value: Any, where: str) -> Record:
    if not isinstance(value, dict):
        raise CorpusError(f"{where}: expected a JSON object (a record with fields), got {type(value).__name__}")
    return Record(value, where)


# ---------------------------------------------------------------------- Hugging Face datasets
HF_INSTALL = "install with: uv sync --extra hf"
_HF_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise CorpusError(f"--hf_dataset needs the Hugging Face 'datasets' package; {HF_INSTALL}") from None
    return datasets


def hf_records(
    name: str, subset: str | None = None, split: str = "train", streaming: bool = False
) -> tuple[Iterator[Record], int | None]:
    """Rows of a Hugging Face data set as records, and their number (None when streaming).

    ``name`` is a hub name (``roneneldan/TinyStories``), a directory written by ``save_to_disk``,
    or a local data file (``.jsonl .json .parquet .csv``; a glob works too), which goes through
    the same ``load_dataset`` call as a hub name (its packaged builder), so local tests exercise
    the hub's code path.
    """
    datasets = _import_datasets()
    where = f"--hf_dataset {name}"
    p = Path(name)
    try:
        if p.is_dir() and any((p / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
            ds = datasets.load_from_disk(str(p))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise CorpusError(f"{where}: no split {split!r} (splits: {', '.join(ds)}); choose with --hf_split")
                ds = ds[split]
            if streaming:
                ds = ds.to_iterable_dataset()
        elif p.is_file() or glob.has_magic(name):
            suffix = Path(name.removesuffix(".gz")).suffix.lower()
            builder = _HF_FILE_BUILDERS.get(suffix)
            if builder is None:
                raise CorpusError(f"{where}: unknown data file type {suffix!r} (use {', '.join(_HF_FILE_BUILDERS)})")
            ds = datasets.load_dataset(builder, data_files={split: name}, split=split, streaming=streaming)
        else:
            ds = datasets.load_dataset(name, subset, split=split, streaming=streaming)
    except CorpusError:
        raise
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CorpusError(f"{where}: cannot load ({first})") from None
    except Exception as err:  # datasets raises many kinds (DatasetNotFoundError, hub errors, ...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CorpusError(f"{where}: cannot load ({type(err).__name__}: {first})") from None
    label = f"{name}[{split}]" if subset is None else f"{name}/{subset}[{split}]"
    count = None if streaming else len(ds)

    def rows() -> Iterator[Record]:
        for i, row in enumerate(ds, 1):
            yield _as_record(row, f"{label} row {i}")

    return rows(), count


def write_documents_text(records: Iterator[Record], fields: Sequence[str], separator: str, out: io.TextIOBase) -> int:
    """Write the documents of ``records`` to ``out`` separated by ``separator`` (a special token, so
    no pre-token spans two documents); returns their number. ``train_bpe`` uses this to give its
    parallel byte-range counter one plain file made from many inputs."""
    n = 0
    for rec in records:
        if n:
            out.write(separator)
        out.write(record_text(rec, fields))
        n += 1
    return n
