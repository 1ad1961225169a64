"""Run folders: the layer that turns user-facing words (a model spec, paths, a target string)
into library calls, and writes and reads back the run folder.

- :mod:`~camlens.runs.session`: a model spec resolved once (model, adapter, preprocessing, labels);
- :mod:`~camlens.runs.row`: the run row (columns, types, Parquet schema), defined once;
- :mod:`~camlens.runs.records`: one batch explained, rendered into rows and files;
- :mod:`~camlens.runs.pipeline`: the run loop (collect, resume, decode, explain, render, write,
  finish) every engine plugs into;
- :mod:`~camlens.runs.writer` and :mod:`~camlens.runs.durable`: the folder's claim, lock, resume
  and crash-safe writes;
- :mod:`~camlens.runs.local`, :mod:`~camlens.runs.tasks`, :mod:`~camlens.runs.distributed`: the
  engines (local, detection/segmentation tasks, Ray): what differs between them;
- :mod:`~camlens.runs.folder`: ``camlens.load_run``, a finished folder read back;
- :mod:`~camlens.runs.report`, :mod:`~camlens.runs.evaluation`, :mod:`~camlens.runs.demo`: the
  HTML report, ``camlens evaluate`` and ``camlens demo``.
"""
