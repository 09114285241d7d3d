"""minillada: masked diffusion language models from scratch, from a char-level toy to LLaDA-8B.

The package is organised by stage, each a subpackage with one concept per module; imports run one
way, from the top of this list to the bottom (``cli`` and ``exercises`` use everything, ``runtime``
uses nothing of minillada)::

    cli/          thin command-line entry points (python -m minillada.cli.train_char, ...)
    exercises/    the checkers of each lesson's exercises
    evaluation/   the autoregressive twin, multiple choice, the reversal experiment, quality
    checkpoints/  minillada's format, training state, Hugging Face snapshots, shipped models
    training/     one loop with a pluggable step, schedules, LLaDA's pre-training step, torchrun
    sampling/     primitives, remasking scores, one loop (generate, infill, sample), traces
    diffusion/    masking (the forward process), the objective, guidance, likelihood bounds
    models/       rope, attention, lesson 1's transformer, the LLaDA model, sizing
    data/         downloads, characters, BPE, chat template, tokenizer files, subwords, reversal
    estimate.py   the one result type with a standard error
    runtime.py    device, seeds, quick mode, paths, progress bars, the model interface

Where each lesson's pieces live:

    lesson 0  runtime, data.downloads
    lesson 1  data.char, diffusion.masking, diffusion.objectives, models.rope,
              models.attention, models.tiny_transformer, training.loop, training.schedules,
              diffusion.likelihood (estimate_nelbo), checkpoints.folder, checkpoints.train_state,
              sampling.primitives, sampling.generate (sample), checkpoints.shipped
    lesson 2  sampling.generate (generate, infill), sampling.remasking, sampling.traces,
              diffusion.guidance, evaluation.char_quality
    lesson 3  diffusion.likelihood (the l-estimator), evaluation.autoregressive,
              evaluation.multiple_choice, data.reversal, evaluation.reversal
    lesson 4  data.bpe, data.chat, data.tokenizer, data.subword, models.llada, training.llada,
              training.distributed, cli.train_llada
    lesson 5  models.llada (presets), models.sizing, checkpoints.hf

Start with ``notebooks/00_setup.ipynb``.
"""

__version__ = "0.2.0"
