"""Optional metric sinks (``loggers: [tensorboard, wandb]``), imported lazily from the [log] extra."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trmlab.errors import ConfigError

KNOWN = ("tensorboard", "wandb")


class TensorBoardLogger:
    """Scalars to ``<run_dir>/tensorboard``."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("loggers includes tensorboard but it is not installed; "
                              "pip install 'trmlab[log]' or remove it from loggers") from None
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, record: dict[str, Any], step: int) -> None:
        prefix = "eval/" if record.get("split") == "eval" else ""
        for key, value in record.items():
            if isinstance(value, int | float) and key not in ("step", "split"):
                self.writer.add_scalar(prefix + key if "/" not in key else key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """W&B run: WANDB_MODE (online/offline/disabled) decides, default offline unless WANDB_API_KEY is set;
    init gives up after 30 s instead of hanging."""

    def __init__(self, config: Any, run_dir: Path) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError("loggers includes wandb but it is not installed; "
                              "pip install 'trmlab[log]' or remove it from loggers") from None
        from trmlab.config import config_to_dict

        # Never wait on a network that may not be there: online only when asked for or logged in.
        default = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        mode = os.environ.get("WANDB_MODE", default)
        if mode not in ("online", "offline", "disabled", "dryrun"):
            raise ConfigError(f"WANDB_MODE={mode!r}: expected online, offline or disabled")
        settings = wandb.Settings(init_timeout=30)
        project = config.project_name or "trmlab"
        self.run = wandb.init(project=project, name=config.run_name or run_dir.name, dir=str(run_dir),
                              config=config_to_dict(config), mode=mode, settings=settings)

    def log(self, record: dict[str, Any], step: int) -> None:
        values = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def check_loggers(config: Any) -> None:
    """Fail before anything is written when a logger is unknown or its package is missing."""
    import importlib.util

    for name in config.loggers:
        if name not in KNOWN:
            raise ConfigError(f"loggers: unknown logger {name!r}; expected some of {list(KNOWN)}")
        if importlib.util.find_spec(name) is None:
            raise ConfigError(f"loggers includes {name} but it is not installed; pip install 'trmlab[log]' "
                              f"or remove it from loggers")


def open_loggers(config: Any, run_dir: Path) -> list[Any]:
    """Instantiate every logger named in ``config.loggers`` (unknown names are a ConfigError)."""
    loggers: list[Any] = []
    for name in config.loggers:
        if name == "tensorboard":
            loggers.append(TensorBoardLogger(run_dir))
        elif name == "wandb":
            loggers.append(WandbLogger(config, run_dir))
        else:
            raise ConfigError(f"loggers: unknown logger {name!r}; expected some of {list(KNOWN)}")
    return loggers
