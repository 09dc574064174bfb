"""Training metrics to ``logging``, ``run_dir/progress.csv`` and, optionally, TensorBoard."""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from lm_gym import error

logger = logging.getLogger("agents")


class MetricsLogger:
    """Writes each update's metrics to ``logging`` (one compact line), ``run_dir/progress.csv``
    and, with ``tensorboard=True``, TensorBoard event files under ``run_dir/tb``.

    ``verbose=1`` attaches a stdout handler to the ``agents`` logger if it has none, so the
    lines show without configuring ``logging``.
    """

    def __init__(
        self, run_dir: str | Path | None, *, verbose: int = 0, tensorboard: bool = False, start_step: int = 0
    ) -> None:
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.verbose = verbose
        self.rows: list[dict[str, float]] = []
        self.writer = None
        if verbose and not logger.handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            csv_path = self.run_dir / "progress.csv"
            if csv_path.is_file():  # continuing or resuming: keep the rows up to start_step
                with csv_path.open() as f:
                    rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
                self.rows = [r for r in rows if r.get("time/total_timesteps", 0.0) <= start_step]
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise error.DependencyNotInstalled(
                    "tensorboard=True needs the tensorboard package: pip install tensorboard"
                ) from e
            self.writer = SummaryWriter(str((self.run_dir or Path("runs")) / "tb"))

    def record(self, metrics: Mapping[str, float], step: int) -> None:
        row = {"time/total_timesteps": float(step), **{k: float(v) for k, v in metrics.items()}}
        self.rows.append(row)
        logger.log(
            logging.INFO if self.verbose else logging.DEBUG,
            "step %d | %s", step,
            " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "time/total_timesteps"),
        )
        if self.run_dir is not None:
            self._write_csv()
        if self.writer is not None:
            for k, v in row.items():
                self.writer.add_scalar(k, v, step)

    def _write_csv(self) -> None:
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        assert self.run_dir is not None
        tmp = self.run_dir / "progress.csv.tmp"
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        tmp.replace(self.run_dir / "progress.csv")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
