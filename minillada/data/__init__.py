"""The data: downloads with a pinned sha256 and an offline copy (``downloads``), characters
as tokens (``char``), byte-level BPE (``bpe``), LLaDA's special tokens and chat template (``chat``),
the released tokenizer files (``tokenizer``), Tiny Shakespeare as subwords (``subword``), and the
facts of lesson 3's reversal task (``reversal``)."""
