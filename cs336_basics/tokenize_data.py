"""Tokenize a large UTF-8 text file into a ``.npy`` of token ids, using all cores.

    python -m cs336_basics.tokenize_data --tokenizer out/tok --input train.txt --output train.npy

The file is cut into many byte ranges (far more than workers, so progress is smooth and memory
stays bounded) at places where cutting cannot change the tokenization: the start of a special
token, or just before an ASCII whitespace character that follows a non-whitespace character (no
GPT-2 pre-token spans such a place). Worker processes encode the ranges; the parent writes their
ids in file order. The result equals ``Tokenizer.encode`` of the whole file.

The output is written under a temporary name and renamed into place only when complete, so a
crash or an error never leaves a truncated ``.npy`` behind. ids are ``uint16`` when the vocabulary
fits (<= 65536), else ``uint32``; ``np.load(path, mmap_mode="r")`` opens the result.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import regex

from cs336_basics.errors import run_cli
from cs336_basics.fsutil import atomic_write
from cs336_basics.tokenizer import Tokenizer, TokenizerError

ProgressFn = Callable[[int, int, int], None]  # (bytes done, total bytes, tokens so far)

_WS_BYTES = b"\t\n\x0b\x0c\r "
_WS_AFTER_NONWS = regex.compile(rb"(?<=[^\t\n\x0b\x0c\r ])[\t\n\x0b\x0c\r ]")
_REGEX_WS = regex.compile(r"\s")  # the same whitespace notion as the GPT-2 pattern
_WINDOW = 1 << 16


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _prev_char_is_nonspace(buf: bytes, p: int) -> bool:
    """Is the character ending just before byte ``p`` a non-whitespace character (GPT-2 sense)?"""
    b = buf[p - 1]
    if b < 0x80:
        return b not in _WS_BYTES
    start = p - 1
    while start > max(0, p - 4) and 0x80 <= buf[start] < 0xC0:
        start -= 1
    try:
        ch = buf[start:p].decode("utf-8")
    except UnicodeDecodeError:
        return False  # invalid bytes (the worker reports them) or window edge: not a cut
    return len(ch) == 1 and not _REGEX_WS.match(ch)


def _spanned(buf: bytes, p: int, specials: list[bytes]) -> bool:
    """Does any occurrence of a special token strictly contain position ``p`` (start < p < end)?"""
    return any(buf.find(s, max(0, p - len(s) + 1), p + len(s) - 1) != -1 for s in specials)


def chunk_offsets(f, size: int, target: int, specials: list[bytes]) -> list[int]:
    """Byte offsets ``[0, ..., size]``, each inner one the first safe cut at or after a multiple of
    ``target``. Safe = a special token's start, or an ASCII whitespace byte preceded by a
    non-whitespace character, in both cases not strictly inside any occurrence of a special token.
    Reads small windows only."""
    specials = [s for s in specials if s]
    back = max((len(s) for s in specials), default=0) + 4
    bounds = [0]
    guess = target
    while guess < size:
        found = None
        pos = max(guess, bounds[-1] + 1)
        while found is None and pos < size:
            base = max(0, pos - back)
            f.seek(base)
            buf = f.read(pos - base + _WINDOW + back)
            hi = min(len(buf), pos - base + _WINDOW)  # cuts considered: [pos, base + hi)
            cands = []
            for m in _WS_AFTER_NONWS.finditer(buf, pos - base, hi):
                p = m.start()
                if p > 0 and _prev_char_is_nonspace(buf, p) and not _spanned(buf, p, specials):
                    cands.append(p)
                    break
            for s in specials:
                i = buf.find(s, pos - base, hi)
                while i != -1 and _spanned(buf, i, specials):
                    i = buf.find(s, i + 1, hi)
                if i != -1:
                    cands.append(i)
            if cands:
                found = base + min(cands)
            else:
                pos = base + hi
        if found is None or found >= size:
            break
        bounds.append(found)
        guess = max(found + 1, guess + target)
    bounds.append(size)
    return bounds


# ---------------------------------------------------------------------- worker side
_worker_tok: Tokenizer | None = None


def _init_worker(tokenizer_dir: str) -> None:
    """Forked workers inherit the parent's tokenizer; spawned ones load it. Ctrl-C is left to the
    parent (which terminates the pool), so workers don't each print a traceback."""
    global _worker_tok
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _worker_tok is None:
        _worker_tok = Tokenizer.from_dir(tokenizer_dir)


def _encode_range(tok: Tokenizer, path: str, start: int, end: int, dtype: np.dtype) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
    except OSError as err:
        raise TokenizerError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TokenizerError(
            f"{path}: invalid UTF-8 at byte offset {start + err.start} ({err.reason})"
        ) from None
    typecode = "H" if dtype.itemsize == 2 else "I"
    if np.dtype(typecode).itemsize != dtype.itemsize or sys.byteorder != "little":
        return np.array(tok.encode(text), dtype=dtype).tobytes()  # unusual platform: slow path
    return tok.encode_packed(text, typecode)


def _work(args: tuple[str, int, int, str]) -> bytes:
    path, start, end, dtype = args
    assert _worker_tok is not None
    return _encode_range(_worker_tok, path, start, end, np.dtype(dtype))


def _run_pool(tok: Tokenizer, tokenizer_dir: str, tasks: list, workers: int, emit) -> None:
    """Encode ``tasks`` in worker processes, calling ``emit(task, ids_bytes)`` in task order.

    ProcessPoolExecutor rather than multiprocessing.Pool: if a worker dies (e.g. killed for memory)
    the pending results fail with BrokenProcessPool instead of waiting forever.
    """
    global _worker_tok
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    _worker_tok = tok if method == "fork" else None  # forked workers inherit it (no reload)
    pool = ProcessPoolExecutor(
        workers, mp_context=mp.get_context(method), initializer=_init_worker, initargs=(tokenizer_dir,)
    )
    ok = False
    try:
        # A sliding window of in-flight chunks keeps memory bounded and output in order.
        inflight: deque = deque()
        for task in tasks:
            inflight.append((task, pool.submit(_work, task)))
            if len(inflight) >= 3 * workers:
                _emit_result(*inflight.popleft(), emit)
        while inflight:
            _emit_result(*inflight.popleft(), emit)
        ok = True
    finally:
        _worker_tok = None
        if ok:
            pool.shutdown(wait=True)
        else:
            _stop_pool(pool)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """On failure (bad input, Ctrl-C, a dead worker) stop at once: terminate the workers instead of
    letting them finish chunks nobody will read. A plain ``shutdown(wait=False)`` leaves the exit to
    the executor's atexit join, which can hang in CPython 3.11 when workers are mid-task."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # gone after shutdown()
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=10)


def _emit_result(task, future, emit) -> None:
    try:
        data = future.result()
    except BrokenProcessPool:
        raise TokenizerError(
            f"{task[0]}: a worker process died while encoding bytes {task[1]}..{task[2]} "
            "(out of memory? try fewer --workers)"
        ) from None
    emit(task, data)


# ---------------------------------------------------------------------- library entry point
def _npy_header(dtype: np.dtype, n: int) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)}
    )
    return buf.getvalue()


def tokenize_file(
    tokenizer_dir: str | os.PathLike,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    num_workers: int | None = None,
    progress: ProgressFn | None = None,
) -> int:
    """Encode ``input_path`` with the tokenizer saved in ``tokenizer_dir``; write ``output_path``
    (.npy, 1-D uint16/uint32) atomically. Returns the number of tokens."""
    tok = Tokenizer.from_dir(tokenizer_dir)
    inp, out = Path(input_path), Path(output_path)
    if not inp.exists():
        raise TokenizerError(f"{inp}: input file not found")
    if not inp.is_file():
        raise TokenizerError(f"{inp}: input is not a regular file")
    if not out.parent.is_dir() and str(out.parent):
        raise TokenizerError(f"{out}: output directory {out.parent} does not exist")
    if out.is_dir():
        raise TokenizerError(f"{out}: output path is a directory")
    if out.exists() and out.resolve() == inp.resolve():
        raise TokenizerError(f"{out}: output would overwrite the input")
    if num_workers is not None and num_workers < 1:
        raise TokenizerError(f"--workers must be >= 1, got {num_workers}")
    workers = num_workers or _available_cpus()
    dtype = _dtype_for(tok.vocab_size)
    size = inp.stat().st_size
    target = min(4 << 20, max(256 << 10, size // (workers * 16) + 1))
    specials = [s.encode("utf-8") for s in tok.special_tokens]
    with open(inp, "rb") as f:
        bounds = chunk_offsets(f, size, target, specials)
    tasks = [(str(inp), a, b, dtype.str) for a, b in zip(bounds[:-1], bounds[1:])]
    workers = max(1, min(workers, len(tasks)))

    try:
        return _write_npy(tok, str(tokenizer_dir), tasks, workers, out, dtype, size, progress)
    except OSError as err:  # disk full, permission denied, ... (the temp file is already removed)
        raise TokenizerError(f"{out}: cannot write output ({err.strerror or err})") from None


def _write_npy(
    tok: Tokenizer, tokenizer_dir: str, tasks: list, workers: int, out: Path, dtype: np.dtype,
    size: int, progress: ProgressFn | None,
) -> int:
    """Header placeholder, chunks in order, then the real header (same length) over it; all in a
    temp file that atomic_write renames into place only on success."""
    placeholder = _npy_header(dtype, 0)
    n_tokens = 0
    done = 0
    with atomic_write(out, "wb") as fout:
        fout.write(placeholder)

        def emit(task, data: bytes) -> None:
            nonlocal n_tokens, done
            fout.write(data)
            n_tokens += len(data) // dtype.itemsize
            done += task[2] - task[1]
            if progress is not None:
                progress(done, size, n_tokens)

        if workers == 1:
            for task in tasks:
                emit(task, _encode_range(tok, task[0], task[1], task[2], dtype))
        else:
            _run_pool(tok, tokenizer_dir, tasks, workers, emit)
        header = _npy_header(dtype, n_tokens)
        if len(header) != len(placeholder):  # cannot happen for < 10**40 tokens; stay safe anyway
            raise TokenizerError(f"{out}: internal error: .npy header size changed")
        fout.seek(0)
        fout.write(header)
    return n_tokens


# ---------------------------------------------------------------------- CLI
class _ProgressLine:
    """Throttled ``bytes done, MB/s, ETA`` line on stderr (rewritten in place on a terminal)."""

    def __init__(self, interval: float | None = None) -> None:
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.tty = sys.stderr.isatty()
        # Twice a second on a terminal; every 10 s into a log file (one line each).
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)

    def __call__(self, done: int, total: int, tokens: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.interval and done < total:
            return
        self.last = now
        dt = max(now - self.t0, 1e-9)
        rate = done / dt
        eta = (total - done) / rate if rate > 0 else float("inf")
        pct = 100.0 * done / total if total else 100.0
        line = (
            f"tokenized {done / 1e6:,.1f}/{total / 1e6:,.1f} MB ({pct:.0f}%)  {rate / 1e6:.1f} MB/s  "
            f"ETA {eta:.0f}s  {tokens:,} tokens"
        )
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cs336_basics.tokenize_data",
        description="Tokenize a UTF-8 text file into a .npy of token ids (all cores).",
    )
    p.add_argument("--tokenizer", required=True, help="directory written by Tokenizer.save / train_bpe")
    p.add_argument("--input", required=True, help="UTF-8 text file")
    p.add_argument("--output", required=True, help="output .npy (written atomically)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = None if args.quiet else _ProgressLine()
    t0 = time.perf_counter()
    n = tokenize_file(args.tokenizer, args.input, args.output, args.workers, prog)
    if prog is not None:
        prog.finish()
    dt = time.perf_counter() - t0
    size = os.path.getsize(args.input)
    print(f"wrote {n:,} tokens to {args.output} ({size / 1e6:,.1f} MB in {dt:.1f}s, {size / 1e6 / max(dt, 1e-9):.1f} MB/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
