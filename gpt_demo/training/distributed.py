"""Training on several processes: which process this is, rank-0-only writes, and a record of each rank's shard.

    gpt-demo sft data.jsonl --out my-sft --device cpu --processes 2          # 2 CPU processes (gloo)
    accelerate launch --multi_gpu --num_processes 2 -m gpt_demo sft data.jsonl --out my-sft --device cpu
    accelerate launch --config_file fsdp.yaml -m gpt_demo dpo pairs.jsonl --out my-dpo     # any accelerate config

Nothing here moves tensors between processes: accelerate owns the process group (gloo on CPUs,
NCCL on GPUs), the HF Trainer (SFT, reward, DPO) and ``accelerate.Accelerator`` (PPO) shard the
data and average the gradients with DDP. This module asks accelerate who we are (``Processes``),
keeps the run's own files (card, curves, ``ranks.json``) to the main process, and records what each
rank trained on (``ShardLog``): the example indices it drew and a digest of its trainable weights,
gathered into ``ranks.json`` beside the adapter, so a run shows that the ranks saw different data
and ended with the same weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

RANKS_FILE = "ranks.json"
TOKEN_FIELDS = ("input_ids", "prompt_ids", "chosen_ids", "rejected_ids", "completion_ids")  # TRL's tokenised columns


@dataclass(frozen=True)
class Processes:
    """This process's place in the run; ``device`` ("cpu" | "cuda") picks gloo or NCCL, as ``use_cpu`` does."""

    device: str

    def _state(self):
        from accelerate import PartialState

        return PartialState(cpu=self.device == "cpu")

    @property
    def rank(self) -> int:
        return int(self._state().process_index)

    @property
    def world_size(self) -> int:
        return int(self._state().num_processes)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return bool(self._state().is_main_process)

    @property
    def backend(self) -> str | None:
        return self._state().backend

    def barrier(self) -> None:
        if self.distributed:
            self._state().wait_for_everyone()

    def gather(self, obj) -> list:
        """``[obj from rank 0, obj from rank 1, ...]`` on every rank (one picklable object each, in memory)."""
        if not self.distributed:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def split(self, items: list) -> tuple[list, int]:
        """This rank's share of ``items`` (every world_size-th) and how many of it are real.

        The share is padded with repeats to the same length on every rank: a sharded model (FSDP,
        ZeRO-3) needs every rank to run the same number of forward passes.
        """
        if not self.distributed:
            return list(items), len(items)
        mine = list(items[self.rank::self.world_size])
        size = -(-len(items) // self.world_size)
        return mine + (mine[-1:] or list(items[:1])) * (size - len(mine)), len(mine)

    def join(self, results: list, real: int) -> list:
        """Every rank's real results of ``split`` shares, rank by rank (the same list on every rank)."""
        if not self.distributed:
            return list(results)
        return [r for part in self.gather(list(results[:real])) for r in part]

    @contextlib.contextmanager
    def main_first(self):
        """The main process runs the block first (e.g. the one-time model conversion), then the others."""
        if not self.distributed:
            yield
            return
        with self._state().main_process_first():
            yield


def begin(device: str) -> Processes:
    """Set up accelerate's state for a run on ``device`` ("cpu" | "cuda"), as ``TrainingArguments`` does.

    The state is reset first (so a CPU run after a CUDA one in the same notebook is a CPU run); under
    ``accelerate launch`` / ``torchrun`` this joins the process group the launcher described.
    """
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # the HF Trainer does the same per TrainingArguments
    procs = Processes(device)
    procs._state()
    return procs


def current(device: str) -> Processes:
    """The ``Processes`` of a run already begun (by ``common.load_base``)."""
    return Processes(device)


def is_sharded(trainer) -> bool:
    """Whether the HF Trainer shards the weights across ranks (FSDP or DeepSpeed, from ``accelerate config``)."""
    return bool(getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False))


def trainable_digest(model) -> str:
    """sha256 over the trainable parameters (name, dtype, bytes): equal on every rank when DDP kept them in sync."""
    h = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        if param.requires_grad:
            data = param.detach().float().cpu().contiguous()
            h.update(name.encode())
            h.update(data.numpy().tobytes())
    return h.hexdigest()


def _row_key(row: dict) -> str:
    """A key for one tokenised training row: its token-id columns (what the collator turns into the batch)."""
    parts = {k: list(row[k]) for k in TOKEN_FIELDS if k in row}
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass
class ShardLog:
    """The training rows this process drew, in order, as indices into the trainer's training set."""

    indices: list = field(default_factory=list)
    unmatched: int = 0
    _index_of: dict = field(default_factory=dict, repr=False)

    def add(self, indices) -> None:
        self.indices.extend(int(i) for i in indices)

    def record(self, procs: Processes, model, out: Path, extra: dict | None = None, digest: bool = True) -> dict:
        """Gather every rank's shard and weight digest; the main process writes ``ranks.json``.

        Returns the card's ``distributed`` entry (world size, backend, examples per rank): a collective
        call, so every rank must make it at the same point. ``digest=False`` for sharded weights
        (FSDP, ZeRO-3), where each rank holds a different part.
        """
        mine = {"rank": procs.rank, "examples": len(self.indices), "indices": self.indices,
                "unmatched": self.unmatched, "trainable_sha256": trainable_digest(model) if digest else None,
                **(extra or {})}
        ranks = procs.gather(mine)
        summary = {"world_size": procs.world_size, "backend": procs.backend,
                   "examples_per_rank": [r["examples"] for r in ranks]}
        if procs.is_main and procs.distributed:
            out.mkdir(parents=True, exist_ok=True)
            (out / RANKS_FILE).write_text(json.dumps({**summary, "ranks": ranks}, indent=1), encoding="utf-8")
        return summary


def watch_shards(trainer, log: ShardLog):
    """Record, per process, which rows of ``trainer.train_dataset`` its training batches held.

    The data collator sees each batch's rows on the process that trains on them (accelerate shards
    the sampler); a callback keeps only batches drawn between train begin and end, and drops the one
    batch accelerate's dataloader prefetches past the last optimiser step.
    """
    from transformers import TrainerCallback

    for index, row in enumerate(trainer.train_dataset):
        log._index_of.setdefault(_row_key(row), index)
    collate = trainer.data_collator
    batches: list[list] = []
    state = {"active": False, "first_step": 0}

    def recording_collator(rows):
        if state["active"]:
            keys = [_row_key(r) for r in rows]
            log.unmatched += sum(k not in log._index_of for k in keys)
            batches.append([log._index_of.get(k, -1) for k in keys])
        return collate(rows)

    class _Shards(TrainerCallback):
        def on_train_begin(self, args, state_, control, **kwargs):
            state.update(active=True, first_step=state_.global_step)

        def on_train_end(self, args, state_, control, **kwargs):
            state["active"] = False
            trained = (state_.global_step - state["first_step"]) * args.gradient_accumulation_steps
            for batch in batches[:trained]:
                log.add(i for i in batch if i >= 0)

    trainer.data_collator = recording_collator
    trainer.add_callback(_Shards())
    return trainer
