"""rewardserve: train, export and serve reward models. The ``rewardserve`` command lives in :mod:`rewardserve.cli`."""

__version__ = "0.1.0"
