"""How a remote job's progress is shown on the client: a live status line and a download bar.

On a terminal (stderr is a TTY) a blocking call keeps one line up to date in
place (``job 3f2a…: QUEUED (position 2)`` -> ``RUNNING`` -> ``COMPLETED``),
drawn with tqdm, and a large result's download shows a byte progress bar.
Anywhere else (a log file, CI, a pipe) nothing is redrawn: each status change
is one plain log line and there is no bar, so logs stay readable.
``CONFIG.APP.REMOTE_LOGGING = False`` silences both.
"""
import sys
from typing import Any, Callable, Optional

DOWNLOAD_BAR_MIN_BYTES = 1 << 20  # smaller results arrive too fast for a bar to mean anything


def logging_on() -> bool:
    """``CONFIG.APP.REMOTE_LOGGING`` (on when the config cannot be read)."""
    try:
        from ..config import CONFIG

        return bool(CONFIG.APP.REMOTE_LOGGING)
    except Exception:  # noqa: BLE001 - a partial install: show the status
        return True


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def _tqdm() -> Any:
    try:
        from tqdm import tqdm

        return tqdm
    except ImportError:  # the torch-free client may not have it
        return None


class StatusLine:
    """One job's status, shown live on a TTY or as log lines elsewhere."""

    def __init__(self, live: bool = True, stream: Any = None) -> None:
        """``live=False``: log lines even on a TTY (``blocking=False``: the user's prompt is back)."""
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = logging_on()
        self.live = live and self.enabled and _is_tty(self.stream)
        self._bar: Any = None
        self._width = 0

    def show(self, job_id: Optional[str], status: str, detail: str = "") -> None:
        if not self.enabled:
            return
        text = "[%s] %s%s" % (job_id, status, (": " + detail) if detail else "")
        if not self.live:
            print(text, file=self.stream)
            return
        tqdm = _tqdm()
        if tqdm is not None:
            if self._bar is None:
                self._bar = tqdm(total=None, desc=text, file=self.stream, bar_format="{desc} [{elapsed}]",
                                 leave=True)
            else:
                self._bar.set_description_str(text)  # redraws the line in place
            return
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def close(self) -> None:
        """Leave the last status on its own line (the job is over)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.live and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def download_bar(self, total: Optional[int]) -> Optional[Callable[[int], None]]:
        """A callback advancing a byte bar for a result of ``total`` bytes (None: no bar)."""
        tqdm = _tqdm()
        if not self.live or tqdm is None or total is None or total < DOWNLOAD_BAR_MIN_BYTES:
            return None
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="downloading result",
                   file=self.stream, leave=False)

        def advance(n: int) -> None:
            bar.update(n)
            if bar.n >= total:
                bar.close()

        return advance
