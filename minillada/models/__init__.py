"""The networks: rotary positions (``rope``), one attention (``attention``), lesson 1's
transformer (``tiny_transformer``), the LLaDA architecture at every size (``llada``), and its exact
parameter and memory counts (``sizing``). A model maps ``(ids, attention_mask=None) -> logits``."""
