"""What a run shows on the console: one progress display per stage, then one line with the stage's time.

    with console_session(verbose=False):      # a whole run; library warnings, logs and bars hidden
        with stage("iteration 1: fine-tune critic_0", unit="step") as s:
            s.set_total(24)
            s.update(1)                       # ...
        line("iteration 1: debate 38.4 ± 2.2 | ...")

prints ``✓ iteration 1: fine-tune critic_0 · 24 steps · 3.1 s``. A stage opened while another is open is a row of
the outer stage's display and prints no line of its own. The display is drawn only on a terminal; in a pipe or a
log file a run prints its lines and nothing else. ``verbose=true`` (a top-level config key) shows everything the
libraries print (warnings, logs, their own progress bars), and mafl's INFO logs.

Every line is also logged (logger ``mafl``), so the run's log file holds it; it is not printed twice.
"""
from __future__ import annotations

import contextlib
import logging
import time
import warnings
from typing import Any, Iterator, Mapping

log = logging.getLogger("mafl")

_state: dict[str, Any] = {"verbose": False, "session": False, "console": None, "display": None}
_stack: list["Stage"] = []


def check_verbose(cfg: Mapping[str, Any]) -> bool:
    """The top-level ``verbose`` key: true or false (absent: false)."""
    from mafl.errors import ConfigError

    value = cfg.get("verbose", False)
    if not isinstance(value, bool):
        raise ConfigError(f"verbose: must be true or false (got {value!r})")
    return value


def is_verbose() -> bool:
    return bool(_state["verbose"])


def console():
    """The rich console of mafl's output (standard output, looked up at each write)."""
    if _state["console"] is None:
        from rich.console import Console

        _state["console"] = Console(highlight=False)
    return _state["console"]


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def line(text: str) -> None:
    """Print one line of a run's console (never wrapped), and log it."""
    console().print(text, markup=False, soft_wrap=True)
    if _state["session"]:
        log.info(text, extra={"mafl_printed": True})


def active() -> bool:
    """Whether a stage is open (a nested stage then adds a row to its display)."""
    return bool(_stack)


class Stage:
    """One stage of a run (see :func:`stage`); ``update(n)`` advances it, ``close()`` ends it and prints its line."""

    def __init__(self, name: str, total: int | None = None, unit: str = "item"):
        self.name, self.total, self.unit = name, total, unit
        self.done = 0
        self.start = time.perf_counter()
        self.outer = not _stack
        self.closed = False
        self._task = None
        _stack.append(self)
        display = _state["display"]
        if self.outer and _draws():
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            display = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                               TextColumn("{task.fields[count]}"), TimeElapsedColumn(), console=console(),
                               transient=True)
            display.start()
            _state["display"] = display
        if display is not None:
            self._task = display.add_task(name if self.outer else f"  {name}", total=total, count=self._count())

    def _count(self) -> str:
        return f"{self.done}/{self.total}" if self.total is not None else ""

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._task is not None and _state["display"] is not None:
            _state["display"].update(self._task, total=total, count=self._count())

    def set_note(self, note: str) -> None:
        """A short note after the stage's name on its display (e.g. the running loss)."""
        if self._task is not None and _state["display"] is not None:
            _state["display"].update(self._task, description=f"{self.name} · {note}")

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._task is not None and _state["display"] is not None:
            _state["display"].update(self._task, advance=n, count=self._count())

    def close(self, ok: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        if self in _stack:
            _stack.remove(self)
        display = _state["display"]
        if display is not None:
            if self.outer:
                display.stop()
                _state["display"] = None
            elif self._task is not None:
                display.remove_task(self._task)
        if self.outer and ok:
            count = f" · {self.done} {self.unit}{'' if self.done == 1 else 's'}" if self.done else ""
            line(f"✓ {self.name}{count} · {format_seconds(time.perf_counter() - self.start)}")

    def __enter__(self) -> "Stage":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


def stage(name: str, total: int | None = None, unit: str = "item") -> Stage:
    """Open a stage: a progress display (``total`` steps of ``unit``, or a spinner when None) while it works, then
    ``✓ name · done units · time``. Use it as a context manager, or call ``close()``."""
    return Stage(name, total, unit)


def close_all() -> None:
    """End every open stage without its line (a stage left open by an error)."""
    while _stack:
        _stack[-1].close(ok=False)


def _draws() -> bool:
    c = console()
    return c.is_terminal and not c.is_dumb_terminal


class _ConsoleFilter(logging.Filter):
    """On the console's log handlers: nothing already printed by :func:`line`; below WARNING only when verbose."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "mafl_printed", False):
            return False
        return self.verbose or record.levelno >= logging.WARNING


def _console_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


@contextlib.contextmanager
def _libraries_quiet() -> Iterator[None]:
    """transformers' and datasets' logs and progress bars off, huggingface_hub's bars off; the old state after."""
    import datasets
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    old = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled(), datasets.logging.get_verbosity(),
           datasets.are_progress_bars_disabled(), hub_utils.are_progress_bars_disabled())
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    hub_utils.disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(old[0])
        if old[1]:
            hf_logging.enable_progress_bar()
        datasets.logging.set_verbosity(old[2])
        if not old[3]:
            datasets.enable_progress_bars()
        if not old[4]:
            hub_utils.enable_progress_bars()


@contextlib.contextmanager
def console_session(verbose: bool = False) -> Iterator[None]:
    """The console of one run: unless ``verbose``, the libraries' warnings, logs and progress bars are hidden and
    only mafl's own warnings show; the console's log handlers show WARNING and above (the log file keeps all)."""
    old_verbose, old_session = _state["verbose"], _state["session"]
    _state["verbose"], _state["session"] = verbose, True
    handlers, filt = _console_handlers(), _ConsoleFilter(verbose)
    for h in handlers:
        h.addFilter(filt)
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            if not verbose:
                warnings.simplefilter("ignore")
                warnings.filterwarnings("default", category=UserWarning, module=r"mafl(\.|$)")
                stack.enter_context(_libraries_quiet())
            yield
    finally:
        close_all()
        for h in handlers:
            h.removeFilter(filt)
        _state["verbose"], _state["session"] = old_verbose, old_session
