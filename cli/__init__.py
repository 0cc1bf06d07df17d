"""The top layer: the ``celrec`` command, the all-in-one runner, replay and evaluation.

Layers point one way (checked by ``lint-imports``, contracts in ``pyproject.toml``):
``schemas`` <- ``cel`` <- ``celrec`` (settings, backends, logs, metrics) <- ``trainer`` |
``service`` <- ``cli``.
"""
