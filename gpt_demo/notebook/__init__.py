"""Jupyter magics over ``gpt_demo.api``: chat in a cell, widgets, probabilities, attention, training.

    %load_ext gpt_demo                      # registers the magics; loads no model
    %gpt config --max-tokens 64 --temperature 0.7
    %%gpt --system "You are terse." --out answer
    What is the capital of France?
    %gpt history                            # %gpt reset starts a new conversation
    %gpt_chat                               # a chat panel (ipywidgets)
    %gpt_next The best thing about AI is its ability to
    %%gpt_embed                             # or: %gpt_embed --from sentences
    A cat sat on the mat.
    A kitten rested on the rug.
    %%gpt_moderate --out verdicts
    I want to kill him
    %gpt_rank -k 3 Write a slogan for a bakery
    %%gpt --probs                           # the answer, each token coloured by its probability
    What is the capital of France?
    %gpt_probs                              # the same for the last answer, read back through the model
    %gpt_attention --layer 13 --head 8 --token it --target animal The animal didn't cross the street because it was too tired
    %gpt_attention --view heads --layer 13 The animal didn't cross the street because it was too tired
    job = %gpt_train sft data.jsonl --out my-sft --max-steps 20   # background thread, live curve, Stop

The first magic that needs the chat model loads it once (with a progress line);
later cells reuse it. Every magic takes ``--help``. Errors are one line
(IPython's ``UsageError``), never a traceback. ``gpt-demo jupyter install`` makes
every kernel load the extension (see ``commands.py``).
"""

from __future__ import annotations


def load_ipython_extension(ipython) -> None:
    from .magics import GptMagics

    if not any(isinstance(m, GptMagics) for m in ipython.magics_manager.registry.values()):
        ipython.register_magics(GptMagics(ipython))


def unload_ipython_extension(ipython) -> None:
    from .magics import GptMagics

    for magics in [m for m in ipython.magics_manager.registry.values() if isinstance(m, GptMagics)]:
        for kind, names in magics.magics.items():
            for name in names:
                ipython.magics_manager.magics[kind].pop(name, None)
        ipython.magics_manager.registry.pop(type(magics).__name__, None)


def state_of(ipython):
    """The ``NotebookState`` of ``ipython``'s magics (config, engines, conversation), or None."""
    from .magics import GptMagics

    for magics in ipython.magics_manager.registry.values():
        if isinstance(magics, GptMagics):
            return magics.state
    return None


__all__ = ["load_ipython_extension", "state_of", "unload_ipython_extension"]
