"""service: the batched HTTP scoring service (docs/design.md §4–6).

Layers, imported one way only: HTTP (``app``, ``routes``, ``compat``, ``schemas``, ``middleware``) →
``engine`` (limits, tokenization, dedup) → ``scheduler`` (queue, batching, backend thread) →
``backends`` (onnxruntime, torch). ``settings`` is built once in ``main`` and passed down; ``errors``
holds the typed errors and their HTTP status table. Entry points: :func:`service.app.create_app` and
:func:`service.server.serve`.
"""
