"""The training program's parts, one job per file. The program itself is ``cs336_basics/training_together.py``;
it reads them in this order:

* ``settings``: every flag, one typed dataclass, the command line and the TOML config file
  (``overrides``: ``--override a.b.c=VALUE`` into that file; ``run_name``: the run's name);
* ``runtime``: device, precision, DDP / FSDP2 process groups, seeds, decided once at setup
  (``zero1``: ZeRO-1 optimizer sharding; ``api``: the Python API's custom-model hook);
* ``state``: what a run carries across a restart, and finding the checkpoint to restart from;
* ``checkpoints``: files that survive crashes, full disks and tampering;
* ``prefetch``: the next step's batches, gathered while this step runs;
* ``step``: one optimizer step, one evaluation, the guard against non-finite steps;
* ``cadence``: intervals in epochs; ``hooks``: ``--on_checkpoint`` commands;
  ``signals``: a graceful stop on SIGTERM / Ctrl-C;
* ``metrics``: console lines, ``metrics.jsonl``, wandb and TensorBoard.
"""
