"""Your own drawings as data (`data.local`): ndjson files, or folders of them, where each file
`<word>.ndjson` holds the drawings of one word, as `doodle play` saves them (data/mine/<word>.ndjson).

The word is the file's name, checked by the rule `play` checks a word with before it names a file
(doodle.categories.file_name_problem); records may be raw or simplified, each detected on its own
(doodle.strokes), and a record that names another word is refused with its file and line
(`check_word`): a label is not something to guess.
"""

from __future__ import annotations

from pathlib import Path

from doodle.categories import file_name_problem, show_word
from doodle.errors import DoodleError

SUFFIX = ".ndjson"


def _word(path: Path) -> str:
    """The word a `<word>.ndjson` file holds; DoodleError naming the file when it cannot be one (play's rule:
    categories.file_name_problem)."""
    word = path.name[:-len(SUFFIX)]
    problem = file_name_problem(word)
    if problem:
        raise DoodleError(f"data.local: {path.parent}: the file {show_word(path.name)}: the word {show_word(word)} "
                          f"{problem}; rename it to <word>.ndjson")
    return word


def local_files(paths: list[str]) -> dict[str, list[Path]]:
    """{word: its files} for data.local's entries, words in order of first appearance (a folder's files
    by name); hidden files (a dot first: editors' and doodle's temporaries) are not drawings."""
    found: dict[str, list[Path]] = {}
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            files = sorted(f for f in path.iterdir()
                           if f.name.endswith(SUFFIX) and not f.name.startswith(".") and f.is_file())
            if not files:
                raise DoodleError(f"data.local: {path}: no <word>{SUFFIX} files in this folder (doodle play saves "
                                  "drawings as data/mine/<word>.ndjson)")
        elif path.is_file():
            if not path.name.endswith(SUFFIX):
                raise DoodleError(f"data.local: {path}: not an {SUFFIX} file; give <word>{SUFFIX} files or folders "
                                  "of them")
            files = [path]
        else:
            raise DoodleError(f"data.local: {path}: no such file or folder")
        for f in files:
            same = found.setdefault(_word(f), [])
            if f.resolve() not in (g.resolve() for g in same):
                same.append(f)
    return found


def local_words(paths: list[str]) -> list[str]:
    """The words of data.local, in order (see local_files)."""
    return list(local_files(paths))


def check_word(record: dict, word: str, source: Path) -> None:
    """A record in `<word>.ndjson` must be a drawing of `word` (or say no word at all)."""
    said = record.get("word")
    if said is not None and said != word:
        raise DoodleError(f"{source}:{record['line']}: a drawing of {said!r} in the file of {word!r}; each file "
                          f"holds one word: move the line to {said}{SUFFIX}")
