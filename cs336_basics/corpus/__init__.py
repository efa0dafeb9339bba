"""Data from wherever it is kept: many files, JSON lines, gzip, Hugging Face ``datasets``, chats.

The course's data path is one text file -> one token file -> one training run. This package widens
both ends without touching that path (a single plain ``.txt`` still takes ``tokenize_data``'s
parallel byte-range encoder, and a single token file still feeds ``data.get_batch`` directly):

* :mod:`~cs336_basics.corpus.sources`: one iterator of documents over many inputs (files, globs,
  ``.txt`` / ``.jsonl`` / ``.json``, their ``.gz`` versions, Hugging Face data sets).
* :mod:`~cs336_basics.corpus.chat`: conversations in four common formats rendered with one template
  of special tokens, with a loss mask on the assistant's answers.
* :mod:`~cs336_basics.corpus.encode`: documents -> token ids (in parallel), written as one file or
  as shards cut at document boundaries, each with its sidecar (and mask).
* :mod:`~cs336_basics.corpus.layout`: how shard, mask and sidecar files are named and found.
* :mod:`~cs336_basics.corpus.shards`: training batches drawn from many token files in proportion
  to their sizes, with the mask; and ``--init_from`` for fine-tuning.
"""
