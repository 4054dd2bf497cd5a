"""Text generation: parameters, the decode loop, streaming, next-token distributions.

    >>> from gpt_demo.generation import GenerationParams
    >>> GenerationParams(temperature=0, max_tokens=32).greedy
    True
"""

from .params import GenerationParams
from .results import Choice, Completion, TokenLogprob, TokenProb

__all__ = ["GenerationParams", "Choice", "Completion", "TokenLogprob", "TokenProb"]
