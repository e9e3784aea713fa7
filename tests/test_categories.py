"""doodle.categories: the one rule for a word that names a file (play's saves, a model's classes), checked on
hand-picked words and on generated text against a real file system."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doodle.categories import CATEGORIES, MAX_NAME_BYTES, SYNTHETIC_SHAPES, file_name_problem, show_word

REFUSED = {  # word -> what the reason says
    "": "is empty", "a\x00b": "U+0000", "two\nlines": "U+000A", "tab\there": "U+0009", "del\x7f": "U+007F",
    "c1\x85": "U+0085", ".hidden": "starts with a dot", "..": "starts with a dot", "../escaped": "starts with a dot",
    "a/b": "path separator '/'", "back\\slash": "path separator '\\'", "x" * 300: "300 bytes long",
    "é" * 101: "202 bytes long", "\ud800": "not valid Unicode", None: "NoneType, not text", 3: "int, not text",
}


@pytest.mark.parametrize("word", list(REFUSED), ids=lambda w: show_word(w)[:20])
def test_words_that_cannot_name_a_file_are_refused_saying_why(word):
    assert REFUSED[word] in file_name_problem(word)


def test_every_real_category_can_name_a_file():
    assert all(file_name_problem(w) is None for w in CATEGORIES + SYNTHETIC_SHAPES)
    assert file_name_problem("é" * 100) is None and file_name_problem("x" * MAX_NAME_BYTES) is None


def test_show_word_keeps_messages_on_one_line_and_short():
    assert show_word("two\nlines") == "'two\\nlines'" and show_word("x" * 300) == repr("x" * 40 + "...")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.text(st.characters(codec="utf-8"), min_size=190, max_size=210))
def test_an_accepted_word_names_one_file_inside_the_folder(tmp_path_factory, word):
    """Whatever text the rule accepts, `<folder>/<word>.ndjson` can be created, and lands in the folder itself."""
    folder = tmp_path_factory.mktemp("words", numbered=True)
    if file_name_problem(word) is not None:
        return
    path = folder / f"{word}.ndjson"
    assert path.parent == folder
    with open(path, "x"):
        pass
    assert os.listdir(folder) == [f"{word}.ndjson"]
