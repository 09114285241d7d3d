"""Weights on disk: minillada's own format (``folder``), resumable training state for
both formats (``train_state``), the released Hugging Face snapshot layout (``hf``), the models
this repository ships (``shipped``), stand-ins in the released layouts (``standins``), and the
released models themselves: where they are, whether a folder and a GPU can take them, loading
(``released``)."""
