"""``--processes N``: the same training command on N processes, started by accelerate's own launcher.

    gpt-demo sft data.jsonl --out my-sft --device cpu --processes 2

runs exactly

    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --main_process_port PORT \\
        --mixed_precision no --dynamo_backend no -m gpt_demo sft data.jsonl --out my-sft --device cpu

with PORT a free local port, so two runs on one machine do not collide, and on the CPU
``--num_cpu_threads_per_process`` set to cores / N (torchrun's default is one thread each).

Why a flag at all: in accelerate 1.15 ``accelerate launch --cpu --num_processes 2`` starts ONE process
unless MPI is set up (it hands multi-CPU runs to ``mpirun``), while ``--multi_gpu`` starts the workers
through torchrun, and they join with gloo as soon as the trainer asks for the CPU (``use_cpu``). That
trap is worth one flag; everything else (DeepSpeed, FSDP, several machines, mixed precision) is
``accelerate launch --config_file ...`` itself, unchanged. No torch import here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import fields

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]


def free_port() -> int:
    """A TCP port free on this machine now (the OS picks it), for the launcher's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_argv(processes: int, command: list[str], port: int = 29500, threads: int | None = None) -> list[str]:
    """accelerate launch's arguments for ``python -m gpt_demo COMMAND...`` on ``processes`` local processes."""
    return ["--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
            "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
            *(["--num_cpu_threads_per_process", str(threads)] if threads else []), "-m", "gpt_demo", *command]


def command_argv(name: str, data_arg: str, args, cfg_cls) -> list[str]:
    """The argv of the training command ``args`` was parsed from, without ``--processes``."""
    data = getattr(args, data_arg.lstrip("-").replace("-", "_"))
    argv = [name, *([data_arg, data] if data_arg.startswith("--") else [data]), "--out", args.out]
    if args.json:
        argv.append("--json")
    for f in fields(cfg_cls):
        value = getattr(args, f.name, None)
        if f.name == "out" or value is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, str(value)]
    return argv


def check_devices(processes: int, device: str) -> str:
    """N processes on ``device``: CUDA needs N GPUs (each rank its own), the CPU takes any N; returns it resolved."""
    from ..models.loading import resolve_device

    device = resolve_device(device)
    if device == "cuda":
        import torch

        if torch.cuda.device_count() < processes:
            raise ValueError(f"processes={processes} on CUDA needs {processes} GPUs, this machine has "
                             f"{torch.cuda.device_count()}; use --device cpu for {processes} CPU processes")
    return device


def relaunch(processes: int, command: list[str], device: str = "cpu") -> int:
    """Run ``gpt-demo COMMAND`` under ``accelerate launch`` on ``processes`` processes; its exit status."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // processes) if device == "cpu" else None  # the cores this process may use, shared out
    argv = launch_argv(processes, command, free_port(), threads)
    print(f"launching {processes} processes: accelerate launch {' '.join(argv)}", file=sys.stderr, flush=True)
    return subprocess.run([*LAUNCH, *argv]).returncode
