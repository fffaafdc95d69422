"""The one evaluation stack, used by in-training evaluation and by the eval scripts alike.

* :mod:`~minigpt.tasks.evaluation.records` -- what is evaluated (:class:`EvalRecord`) and its errors;
* :mod:`~minigpt.tasks.evaluation.metrics` -- each benchmark's metric, computed as the benchmark does;
* :mod:`~minigpt.tasks.evaluation.scorers` -- the table of scorers (one prediction -> a row, rows -> figures),
  keyed by benchmark and by sample task;
* :mod:`~minigpt.tasks.evaluation.sources` -- a split as the loop reads it: benchmark records or a dataset's samples;
* :mod:`~minigpt.tasks.evaluation.loop` -- the loop: batched generation, torchrun shards, resumable
  predictions, one gather, scoring on rank 0;
* :mod:`~minigpt.tasks.evaluation.table` -- the results tables.

It sits in the tasks layer so the runner's in-training evaluation can use it;
:mod:`minigpt.evaluation.benchmarks` (the eval scripts' readers and command line) sits on top.
"""
