"""Progress and curves: a tqdm bar, an ``on_progress(step, total, metrics)`` callback for front-ends,
and loss / reward / KL curves written as ``curves.csv`` and ``curves.png`` beside the adapter.

    >>> rec = CurveRecorder(None, total=3, progress=False)
    >>> rec.log(1, {"loss": 2.0}); rec.log(2, {"loss": 1.5, "kl": 0.01})
    >>> rec.rows[-1]
    {'step': 2, 'loss': 1.5, 'kl': 0.01}
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Callable

ProgressFn = Callable[[int, int, dict], None]
# Which logged numbers get a panel in the PNG, and their titles.
PANELS = (("loss", "loss"), ("reward", "reward"), ("kl", "KL to reference (nats / answer)"),
          ("accuracy", "pair accuracy"), ("margin", "margin"))
_SKIP = ("learning_rate", "grad_norm", "epoch", "num_tokens", "entropy", "runtime", "per_second", "total_flos")


class CurveRecorder:
    """Collects logged metrics per step; ``save()`` writes the CSV and PNG into ``out_dir``.

    ``main_process=False`` (the other ranks of a multi-process run) still collects rows, but shows
    no bar, calls no ``on_progress`` and writes nothing: the main process reports for the run.
    """

    def __init__(self, out_dir: Path | None, total: int = 0, *, title: str = "", progress: bool = True,
                 on_progress: ProgressFn | None = None, resume_until: int | None = None,
                 main_process: bool = True):
        self.out_dir = Path(out_dir) if out_dir and main_process else None
        self.total, self.title = total, title
        self.on_progress = on_progress if main_process else None
        self.rows: list[dict] = []
        self._bar = None
        self._progress = progress and main_process
        if resume_until is not None and self.out_dir and (self.out_dir / "curves.csv").is_file():
            self.rows = [r for r in _read_csv(self.out_dir / "curves.csv") if r["step"] <= resume_until]

    def start(self, total: int, initial: int = 0) -> None:
        self.total = total
        if self._progress and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=self.title or "training", unit="step")

    def advance(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(max(0, step - self._bar.n))

    def log(self, step: int, metrics: dict) -> None:
        values = {k: float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        if self.rows and self.rows[-1]["step"] == step:
            self.rows[-1].update(values)
        else:
            self.rows.append({"step": int(step), **values})
        self.advance(step)
        if self._bar is not None:
            shown = {k: f"{v:.3g}" for k, v in values.items() if _panel(k)}
            self._bar.set_postfix(shown, refresh=False)
        if self.on_progress is not None:
            self.on_progress(int(step), int(self.total), dict(values))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def save(self, png: bool = True) -> dict:
        """Write curves.csv and curves.png (PNG only when matplotlib is installed); return their paths."""
        if self.out_dir is None:
            return {}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        keys = ["step"] + sorted({k for r in self.rows for k in r} - {"step"})
        csv_path = self.out_dir / "curves.csv"
        with open(csv_path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        paths = {"csv": str(csv_path)}
        image = plot_curves(self.rows, self.out_dir / "curves.png", self.title) if png else None
        if image:
            paths["png"] = str(image)
        return paths


def _panel(key: str) -> str | None:
    if any(s in key for s in _SKIP):
        return None
    for needle, _ in PANELS:
        if needle in key.lower():
            return needle
    return None


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [{"step": int(float(r.pop("step"))), **{k: float(v) for k, v in r.items() if v not in ("", None)}}
                for r in csv.DictReader(fh)]


def plot_curves(rows: list[dict], path: Path, title: str = "") -> Path | None:
    """One panel per kind of number (loss, reward, KL, accuracy, margin) against the step."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups: dict[str, list[str]] = {}
    for key in sorted({k for r in rows for k in r} - {"step"}):
        panel = _panel(key)
        if panel:
            groups.setdefault(panel, []).append(key)
    order = [p for p, _ in PANELS if p in groups]
    if not order:
        return None
    fig, axes = plt.subplots(1, len(order), figsize=(4.2 * len(order), 3.2), squeeze=False)
    for ax, panel in zip(axes[0], order):
        for key in groups[panel]:
            pts = [(r["step"], r[key]) for r in rows if key in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 40 else None, label=key)
        ax.set_title(dict(PANELS)[panel])
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def trainer_callback(recorder: CurveRecorder):
    """A transformers ``TrainerCallback`` feeding ``recorder`` (built lazily: transformers is heavy)."""
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):
        active = False  # only logs between train begin and end are curve points (not evaluate() around them)

        def on_train_begin(self, args, state, control, **kwargs):
            self.active = True
            recorder.start(state.max_steps, initial=state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            recorder.advance(state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.active and logs and "train_runtime" not in logs:  # the end-of-run summary is no point
                recorder.log(state.global_step, logs)

        def on_save(self, args, state, control, **kwargs):
            recorder.save(png=False)  # the CSV so far goes with each checkpoint, for --resume

        def on_train_end(self, args, state, control, **kwargs):
            self.active = False
            recorder.close()

    return _Callback()
