"""Course exercises with automatic checkers: re-implement the project's ops, get told what is wrong.

The exercises live in the repository, in ``tutorials/exercises/``: one stub file per exercise (a
function with its signature, the shapes and the math, and ``raise NotImplementedError``), the
solutions apart in ``tutorials/exercises/solutions/``. This package holds what judges them:

    minialign exercise list
    minialign exercise check 05          from the repository root (or --dir FOLDER)

Each exercise compares the student's function with the project's own code (the reference
backend, the tokenizer, the hand-written backward passes, the loss, the pipeline, the retrieval
metrics) and, where it is installed, with torch; on a mismatch it names the first wrong element
and, when the student's output is that of a known mistake, gives that mistake's hint
(``checker.py`` says how). docs/exercises.md lists them with the page each goes with.
"""

from __future__ import annotations

from pathlib import Path

from . import contrastive, text, triton_kernels, vision
from .checker import Exercise, ExerciseSetupError, Result, check, find_folder

EXERCISES: dict[str, Exercise] = {e.number: e for e in (*text.EXERCISES, *vision.EXERCISES, *contrastive.EXERCISES,
                                                           *triton_kernels.EXERCISES)}


def lookup(number: str) -> Exercise:
    """The exercise numbered ``number`` ("5", "05"); ExerciseSetupError for any other text."""
    key = number.strip()
    key = key.zfill(2) if key.isdigit() else key
    if key not in EXERCISES:
        first, last = min(EXERCISES), max(EXERCISES)
        raise ExerciseSetupError(f"unknown exercise {number!r}: the exercises are {first} to {last} "
                                 "(minialign exercise list)")
    return EXERCISES[key]


def check_exercise(number: str, directory: str | Path | None = None) -> Result:
    """Check exercise ``number`` in ``directory`` (found from the current folder when None)."""
    exercise = lookup(number)
    folder = find_folder(list(EXERCISES.values()), directory)
    numbers = sorted(EXERCISES)
    following = numbers.index(exercise.number) + 1
    return check(exercise, folder, next_exercise=EXERCISES[numbers[following]] if following < len(numbers) else None)


__all__ = ["EXERCISES", "Exercise", "ExerciseSetupError", "Result", "check_exercise", "find_folder", "lookup"]
