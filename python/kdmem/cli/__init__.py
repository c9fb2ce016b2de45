"""The ``kdmem`` command line: one click group, one subcommand per stage.

Each subcommand parses its options, calls one library function (also usable from Python)
and prints; bad input ends with one line on stderr naming the problem and the fix, and exit
status 2 (``KdmemError``) or 130 (Ctrl-C). Commands live by area: :mod:`.corpus` (shard,
import, index, featurize, scan), :mod:`.models` (train, distill, measure, generate),
:mod:`.study` (run, demo, predict, sets, report, filter, doctor); shared options and the
progress bars (tqdm, only here) in :mod:`._options`. Library modules that need torch,
transformers or scikit-learn are imported inside the commands, so ``kdmem --help`` stays
fast and works without them.
"""

from __future__ import annotations

from kdmem.cli import corpus, models, study  # noqa: F401  (registers the commands)
from kdmem.cli._app import main, run

__all__ = ["main", "run"]
