"""``python -m kdmem ...``: the ``kdmem`` command line (e.g. under ``torchrun -m kdmem``; a rank
that ``kdmem run`` launched first sends its output to its log, :mod:`kdmem.launch.ranklog`)."""

from kdmem.launch.ranklog import redirect_rank_output

redirect_rank_output()

from kdmem.cli import main  # noqa: E402

main(prog_name="kdmem")
