"""The one exception type users see: a message that names the file, line or key and what to do."""

from __future__ import annotations


class DoodleError(Exception):
    """A user-facing failure. The CLI prints `str(err)` on one line and exits with `exit_code`."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


def check_names(own: dict, given: dict, mismatch: str) -> None:
    """Raise DoodleError(`mismatch`: missing ..., unexpected ...) unless both dicts hold the same array names."""
    missing = sorted(set(own) - set(given))
    extra = sorted(set(given) - set(own))
    if missing or extra:
        raise DoodleError(f"{mismatch}: missing {missing or 'none'}, unexpected {extra or 'none'}")


def lookup(table: dict, name, what: str):
    """table[name], or a DoodleError listing the valid names (a config string maps straight to code)."""
    try:
        return table[name]
    except (KeyError, TypeError):
        raise DoodleError(f"unknown {what} {name!r}: use one of {', '.join(sorted(table))}") from None
