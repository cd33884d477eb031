"""feedback: human judgements in, preference data out.

- :mod:`feedback.events`: the event schema (choice, ranking with ties, ratings, thumbs, criteria);
- :mod:`feedback.store`: the durable store (SQLite embedded, PostgreSQL for several replicas), the only
  module that talks to the database; :mod:`feedback.schema` and ``migrations/`` define its table;
- :mod:`feedback.router`: ``POST /feedback`` and ``GET /feedback/stats``, mounted by the service;
- :mod:`feedback.export`: events to the data forms ``rewardserve train`` reads, and the store as a
  training source (``--train-data sqlite:///…``);
- :mod:`feedback.stats` and :mod:`feedback.metrics`: counts, agreement and the reward models' live accuracy.

A stage like training, export and service: it imports ``rewardmodel`` and no other stage. Nothing is
imported here, so ``feedback.errors`` stays importable without SQLAlchemy.
"""
