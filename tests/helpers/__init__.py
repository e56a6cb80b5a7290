"""Shared test helpers: a quiet Trainer, a fit helper with a recorder, the CLI and DDP runners.

Import as ``from tests.helpers import fit, quiet_trainer, Recorder, ...`` (the repository root is
on ``sys.path`` through pytest's ``pythonpath`` setting in pyproject.toml).
"""

from tests.helpers.cli import CONFIGS, ROOT, TINY, lit_unlearn, method_config, requires_ddp, tiny_cli_args
from tests.helpers.training import Recorder, adamw, fit, quiet_trainer, snapshot, tiny_data

__all__ = ["CONFIGS", "ROOT", "TINY", "Recorder", "adamw", "fit", "lit_unlearn", "method_config", "quiet_trainer",
           "requires_ddp", "snapshot", "tiny_cli_args", "tiny_data"]
