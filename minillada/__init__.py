"""minillada: masked diffusion language models from scratch, from a char-level toy to LLaDA-8B.

The package grows lesson by lesson; every module holds one concept. Start with
``notebooks/00_setup.ipynb``.
"""

__version__ = "0.1.0"
