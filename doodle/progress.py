"""Progress callbacks for long work.

Library code reports through a `Reporter`; the default does nothing. The CLI passes one that
draws rich progress bars, so the library never imports rich.
"""

from __future__ import annotations


class Reporter:
    """No-op progress sink. Subclass and override what you want to show.

    `key` identifies one task (one file, one epoch...); `total` may be None when unknown.
    `fields` carries live figures (loss, accuracy, speed) for a status line.
    """

    def start(self, key: str, description: str, total: float | None = None, unit: str = "") -> None:
        """A task begins."""

    def update(self, key: str, advance: float = 0, completed: float | None = None,
               total: float | None = None, **fields) -> None:
        """A task moved on by `advance` (or is now at `completed`)."""

    def end(self, key: str) -> None:
        """A task is finished (successfully or not); its bar may go."""

    def log(self, message: str) -> None:
        """A line worth showing above the bars (a warning, a skipped file)."""

    def epoch(self, row: dict) -> None:
        """One finished training epoch: epoch, train_loss, train_accuracy, val_loss, val_accuracy, lr, seconds."""


NULL_REPORTER = Reporter()
