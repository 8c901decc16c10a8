"""What a job shows on the console: this package's own messages, warnings from anywhere, and nothing twice.

Hydra sends every log record to the console and to the job's log file (conf/hydra/job_logging). The
console keeps what a user acts on; the file keeps everything. Lightning adds a console handler of its own
(so each of its lines appeared twice) and prints notices and tips at INFO; torch warns about a deprecation
inside Lightning on every evaluation loop: none of it is the user's to fix.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings

OWN_LOGGERS = ("robustness_bias", "__main__")
NOT_THE_USERS_TO_FIX = (r".*isinstance\(treespec, LeafSpec\)` is deprecated",
                        r"The `srun` command is available on your system but is not used")   # any machine with SLURM


class ConsoleFilter(logging.Filter):
    """On the console: this package's records from INFO, every other library's from WARNING, but for
    records logged with ``extra={"console": False}`` (details for the log file: smoothing's batch probe)
    and submitit's, which its own handlers print already.

    The log file, which has no filter, keeps the rest (Lightning's device and checkpoint notices,
    matplotlib's unit conversions).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "console", True):
            return False
        if record.name.split(".")[0] == "submitit" and logging.getLogger("submitit").handlers:
            return False   # submitit prints its own records (in a SLURM job: "Bypassing signal SIGCONT" on requeue)
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in OWN_LOGGERS


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS message``, with the level named from WARNING up; the file keeps the logger's name."""

    def __init__(self):
        super().__init__(datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname} "
        text = f"{self.formatTime(record, self.datefmt)} {level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class ConsoleHandler(logging.StreamHandler):
    """The console's handler: a line never starts at the end of a live progress bar's line. tqdm's ``write``
    (its public way to print beside bars) clears the bars, writes the line and draws them again below it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.std import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:   # as logging.StreamHandler does: a failed line must not end the job
            self.handleError(record)


def quiet_libraries() -> None:
    """Each library line once, through Hydra's handlers: drop the handlers Lightning puts on its own loggers
    when it is imported (Hydra configures the root logger later, so both printed), and silence the warnings
    raised inside libraries that no setting of ours changes. For entry points only: it is process-wide."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
                        and not isinstance(h, logging.FileHandler)]:
            logger.removeHandler(handler)
        logger.propagate = True
    for message in NOT_THE_USERS_TO_FIX:
        warnings.filterwarnings("ignore", message=message)


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (IPython's kernel app, not its terminal shell)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in shell.config


def interactive() -> bool:
    """Whether a person watches the console or a notebook: progress bars only then (a redirected log would
    fill with them)."""
    return sys.stderr.isatty() or in_notebook()


def progress_bar(iterable=None, **options):
    """tqdm's bar: a widget in a notebook that has ipywidgets, else text, and none where nobody watches.
    Not tqdm.auto, which warns on import in a kernel without ipywidgets ("IProgress not found")."""
    if not interactive():
        options["disable"] = True
    if in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(iterable, **options)
