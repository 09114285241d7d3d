"""Thin command-line entry points: ``python -m minillada.cli.train_char``, ``train_ar`` and
``train_llada`` (see each module's docstring)."""
