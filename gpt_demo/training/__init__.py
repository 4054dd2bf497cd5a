"""Fine-tuning and RLHF: LoRA SFT, a reward model, PPO with a KL leash to the reference, DPO.

    >>> from gpt_demo import api
    >>> api.train_sft("sft.jsonl", out="my-sft", max_steps=20)            # doctest: +SKIP
    >>> api.train_reward("store", out="my-rm")                            # doctest: +SKIP
    >>> api.train_ppo("prompts.jsonl", reward="my-rm", out="my-ppo")      # doctest: +SKIP
    >>> api.train_dpo("pairs.jsonl", out="my-dpo")                        # doctest: +SKIP
    >>> api.load_engine(adapter="my-ppo").chat("Hi")                      # doctest: +SKIP

Each workflow is a config dataclass (``<x>_config.py``, no torch) and a function
(``<x>.py``, imports torch, peft and trl only when called). Adapters land under
``$GPT_DEMO_HOME/adapters/NAME`` as safetensors plus a JSON card (``adapters.py``).
"""
