"""The benchmark harness: a grid of envs × agents × seeds, run in parallel, summarised.

```python
from lm_gym import bench

config = bench.BenchConfig(envs=["lm_gym/Copy-v0"], agents=["random", "ppo"], seeds=3, budget=20_000)
results = bench.run_bench(config, out="runs/copy", workers=2)   # writes results.md and plots
print(bench.write_report("runs/copy", config, plots=False))
```

``lm-gym bench`` is the same from the command line; ``lm-gym quickstart`` runs the
``quickstart`` preset. Each cell writes ``config.json``, ``curve.csv``, ``metrics.jsonl``,
``eval.json``, ``samples.jsonl`` and finally a ``done`` marker into its own directory;
rerunning a grid runs only the cells without the marker.
"""

from lm_gym.bench.backends import BACKENDS, Backend, LocalBackend, get_backend, register_backend
from lm_gym.bench.config import PRESETS, BenchConfig, Cell, load_config, preset
from lm_gym.bench.report import (
    CellRecord,
    load_results,
    plot_results,
    summary_markdown,
    write_report,
)
from lm_gym.bench.runner import CellResult, run_bench, run_cell

__all__ = [
    "BACKENDS",
    "Backend",
    "BenchConfig",
    "Cell",
    "CellRecord",
    "CellResult",
    "LocalBackend",
    "PRESETS",
    "get_backend",
    "load_config",
    "load_results",
    "plot_results",
    "preset",
    "register_backend",
    "run_bench",
    "run_cell",
    "summary_markdown",
    "write_report",
]
