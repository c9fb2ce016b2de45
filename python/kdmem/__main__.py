"""``python -m kdmem ...``: the ``kdmem`` command line (e.g. under ``torchrun -m kdmem``)."""

from kdmem.cli import main

main(prog_name="kdmem")
