"""``python -m kdmem.train train|distill ...``: the CLI, for launchers that want a module
(``torchrun --nproc-per-node 8 -m kdmem.train distill ...``; ``-m kdmem`` works too)."""

from kdmem.cli import main

main(prog_name="kdmem")
