"""training: fit a scalar-head reward model on preferences and write a bundle.

Entry point: :func:`training.run.train` with a :class:`training.config.TrainConfig`
(``rewardserve train`` on the command line). Imports :mod:`rewardmodel`, never ``export`` or ``service``.
"""
