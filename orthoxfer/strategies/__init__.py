"""How U is found: the interface (:mod:`.base`, :mod:`.trained`), one file per strategy, the registry (:mod:`.registry`).

Adding a strategy: one file with a :class:`~orthoxfer.strategies.base.Strategy` (its own
settings declared as :class:`~orthoxfer.strategies.options.Option` s) and one
:func:`~orthoxfer.strategies.registry.register` call.
"""
