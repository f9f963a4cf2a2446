"""Run the example notebooks as tests with nbval, in lax mode, with the sanitizer in tests/nbval_sanitize.cfg.

    pytest tests notebooks          # the unit tests, and every notebook run top to bottom
    pytest notebooks                # only the notebooks

Lax mode: every cell must run without an error, and only the cells marked ``# NBVAL_CHECK_OUTPUT`` have their
output compared with the output stored in the notebook (after sanitizing timings, addresses and temp paths).
Nothing needs to be passed on the command line; nbval's own flags still work and win when given:
``pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg notebooks`` is the same run, and
``--nbval`` (strict: every output compared) can be used to see everything that changed.

The kernel is the Python that runs pytest (nbval's --nbval-current-env) unless --nbval-kernel-name is given.
With ``-p no:nbval`` the notebooks are not collected.

The notebooks are stored WITH the outputs of a real run on the packaged model (nbval compares against them). When
the packaged model or a checked output changes, execute them again in place (a minute or two on a CPU):

    jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.store_widget_state=False notebooks/0*.ipynb
"""
from __future__ import annotations

from pathlib import Path

SANITIZE = Path(__file__).resolve().parents[1] / "tests" / "nbval_sanitize.cfg"

try:
    from nbval.plugin import IPyNbFile
except ImportError:  # nbval not installed: the notebooks are not collected at all
    IPyNbFile = None


def _defaults(config) -> None:
    opt = config.option
    if getattr(opt, "nbval_sanitize_with", None) is None:
        opt.nbval_sanitize_with = str(SANITIZE)
    if not getattr(opt, "nbval_kernel_name", None):
        opt.nbval_current_env = True


if IPyNbFile is not None:
    class LaxNotebook(IPyNbFile):
        """nbval's notebook collector in lax mode, used when pytest runs without --nbval / --nbval-lax."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.compare_outputs = False  # what --nbval-lax sets: compare only NBVAL_CHECK_OUTPUT cells


def pytest_collect_file(file_path: Path, parent):
    if file_path.suffix != ".ipynb" or IPyNbFile is None:
        return None
    opt = parent.config.option
    if not hasattr(opt, "nbval_lax"):
        return None  # nbval is installed but disabled (-p no:nbval): skip the notebooks
    _defaults(parent.config)
    if opt.nbval or opt.nbval_lax:
        return None  # nbval's own hook collects it, with the flags given
    return LaxNotebook.from_parent(parent, path=file_path)
