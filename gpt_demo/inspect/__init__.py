"""Look inside the model: next-token distributions you can step through, and attention maps.

    >>> from gpt_demo.inspect import attention_map, step    # doctest: +SKIP
"""

from .attention import AttentionMap, all_attentions, attention_map, strongest_heads
from .next_token import StepResult, step

__all__ = ["AttentionMap", "StepResult", "all_attentions", "attention_map", "step", "strongest_heads"]
