"""Thin command-line entry points: ``python -m minillada.cli.train_char``, ``train_ar``,
``train_llada`` and ``chat`` (see each module's docstring)."""
