"""Training: one loop with a pluggable step (``loop``), learning-rate schedules
(``schedules``), LLaDA's pre-training step with crop, accumulation and data parallelism
(``llada``), supervised fine-tuning LLaDA's and iLLaDA's way (``sft``), and the ``torchrun``
helpers (``distributed``)."""
