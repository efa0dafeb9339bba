"""StopRequest: SIGTERM/SIGINT become a request the loop polls; the previous handlers come back."""

from __future__ import annotations

import os
import signal
import time

import torch

from cs336_basics.training.signals import StopRequest


def _wait_for(cond, timeout=30.0):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)
    return cond()


def test_sigterm_sets_the_request_and_uninstall_restores_the_handler(capsys):
    before = signal.getsignal(signal.SIGTERM)
    stop = StopRequest()
    stop.install()
    try:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert _wait_for(lambda: stop.requested)
        assert stop.signame == "SIGTERM"
        assert stop.agree(torch.device("cpu")) == "SIGTERM"  # one process: its own signal
        seen: list[str] = []
        assert _wait_for(lambda: seen.append(capsys.readouterr().out) or "Received SIGTERM" in "".join(seen))
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGTERM) == before


def test_no_signal_means_no_request():
    stop = StopRequest()
    stop.install()
    try:
        assert stop.agree(torch.device("cpu")) is None and not stop.requested
    finally:
        stop.uninstall()
