"""The analysis stages keep `import kdmem` and `kdmem --help` light."""

from __future__ import annotations

import subprocess
import sys


def test_analysis_imports_stay_light() -> None:
    code = (
        "import sys, kdmem, kdmem.cli, kdmem.analysis, kdmem.analysis.sets, "
        "kdmem.analysis.predictor, kdmem.analysis.report\n"
        "from click.testing import CliRunner\n"
        "for sub in ('predict', 'sets', 'report'):\n"
        "    r = CliRunner().invoke(kdmem.cli.main, [sub, '--help'])\n"
        "    assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('sklearn', 'matplotlib', 'scipy', 'torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
