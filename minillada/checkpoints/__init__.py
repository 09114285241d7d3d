"""Weights on disk: minillada's own format (``folder``), resumable training state for
both formats (``train_state``), the released Hugging Face snapshot layout (``hf``), and the models
this repository ships (``shipped``)."""
