"""The training program's parts (settings, step, state, runtime, signals, metrics, checkpoints).

The program itself is ``cs336_basics/training_together.py``; it reads these top to bottom.
"""
