"""How an exercise is checked: load the student's file, run it on seeded cases, compare, explain.

An exercise (``Exercise``) names a file in the exercises folder and a function in it, and
carries everything needed to judge that function:

    cases()      seeded inputs, several shapes, odd and prime sizes among them      [Case, ...]
    reference    the project's own computation of the same thing (the lesson code)
    also         independent references (torch, finite differences), when installed
    mistakes     known-wrong variants, each with the hint a student who made it needs

The student's function runs on every case and its outputs are compared with the reference's
(elementwise ``|yours - expected| <= atol + rtol |expected|``, the statistics of
``minialign.array_errors``, as in the test suite). On the first failing case the report names
the output, both shapes when they differ, the first wrong element with its index and both
values, the max error and the mismatch count; then it runs each known-wrong variant on that case
and, when the student's output matches one (within 10x the tolerance: the mistake made in
another order of operations), gives that mistake's hint; when several match there, the ones that
also match the student's outputs on the most other cases. A function that raises gets the line
of the student's file that raised, and the hint of a known mistake that raises the same way.

A stub untouched (its ``raise NotImplementedError``, also when Triton wraps it) is reported as
"not implemented yet", never as a traceback. Exit codes, in ``minialign exercise check``: 0
passed, 1 not passed (not implemented, wrong, or raised), 2 a setup problem (no exercises folder,
an unknown number, a missing file or dependency).
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..array_errors import array_errors

# A variant "matches" the student's output within this many times the exercise's tolerance: the
# same mistake computed in another order (float64 vs float32, a loop vs a vectorised form).
MISTAKE_MATCH_SLACK = 10.0


class ExerciseSetupError(ValueError):
    """Not the student's code: no exercises folder, an unknown number, a missing dependency.
    (A ValueError, so that the command reports it as one line, exit 2.)"""


@dataclass(frozen=True)
class Case:
    """One seeded input. ``name`` says what is special about it (the sizes, what it traps)."""

    name: str
    args: tuple  # the function's arguments
    trap: str | None = None  # a hint for when this case fails and no known mistake explains it
    tolerance: tuple[float, float] | None = None  # (atol, rtol) for this case, when float32 itself does worse


@dataclass(frozen=True)
class Mistake:
    """A known-wrong variant of the exercise's function (same signature) and its hint."""

    hint: str
    variant: Callable
    raises: bool = False  # the mistake raises (a broadcasting error, say): match on the exception type


@dataclass(frozen=True)
class Reference:
    """An independent reference: ``compute(*case.args)`` gives the expected outputs;
    ``available()`` says whether it can run here (torch installed, say)."""

    name: str
    compute: Callable
    atol: float
    rtol: float
    available: Callable[[], bool] = lambda: True
    missing: str = ""  # what to install, said when it is not available


def torch_reference(name: str, compute: Callable, atol: float, rtol: float) -> Reference:
    """A reference computed with torch (imported inside ``compute``), skipped where it is not installed."""
    return Reference(name, compute, atol, rtol, available=lambda: importlib.util.find_spec("torch") is not None,
                     missing="torch is not installed (pip install -e '.[dev]')")


@dataclass(frozen=True)
class Exercise:
    number: str  # "05"
    title: str  # "LayerNorm backward"
    file: str  # "05_layer_norm_backward.py", in the exercises folder
    function: str  # the function the checker calls (for a Triton exercise, the launcher that runs the kernel)
    teaches: str  # one line: what the exercise teaches
    docs: str  # the docs page (and section) that explains it, relative to docs/
    cases: Callable[[], Sequence[Case]]
    reference: Callable  # the project's computation, with the student's signature
    reference_name: str  # where it lives, for the report
    outputs: tuple[str, ...]  # names of the outputs (one for a single array)
    atol: float
    rtol: float
    tolerance: str  # why this tolerance
    mistakes: tuple[Mistake, ...] = ()
    also: tuple[Reference, ...] = ()
    exact: bool = False  # outputs are Python values (lists of tokens), compared with ==
    needs: tuple[str, ...] = ()  # modules that must be importable (torch, triton)
    prepare: Callable[[], None] | None = None  # run before the student's file is imported
    call: Callable | None = None  # how to call the student's function, when not fn(*case.args)
    writes: str | None = None  # what the student writes, when not ``function`` (a kernel its launcher runs)

    @property
    def docs_path(self) -> str:
        return f"docs/{self.docs}"


@dataclass
class Result:
    exercise: Exercise
    status: str  # "passed", "not implemented", "wrong", "raised"
    lines: list[str]

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def text(self) -> str:
        return "\n".join(self.lines)

    def to_json(self) -> dict[str, Any]:
        e = self.exercise
        return {"exercise": e.number, "title": e.title, "file": e.file, "status": self.status,
                "passed": self.passed, "report": self.lines}


# -- finding the exercises -------------------------------------------------------------------


def find_folder(exercises: Sequence[Exercise], directory: str | os.PathLike | None = None) -> Path:
    """The folder that holds the exercise files: ``directory`` when given, else the first of
    ./tutorials/exercises, ./exercises and . that holds one of them (the exercises live in the
    repository, not in the installed package)."""
    names = [e.file for e in exercises]

    def holds_exercises(path: Path) -> bool:
        return path.is_dir() and any((path / name).is_file() for name in names)

    if directory is not None:
        path = Path(directory)
        if not path.is_dir():
            raise ExerciseSetupError(f"--dir {os.fspath(directory)!r} is not a folder")
        if not holds_exercises(path):
            raise ExerciseSetupError(f"--dir {os.fspath(directory)!r} holds none of the exercise files "
                                     f"({names[0]}, ..., {names[-1]})")
        return path
    here = Path.cwd()
    for path in (here / "tutorials" / "exercises", here / "exercises", here):
        if holds_exercises(path):
            return path
    raise ExerciseSetupError("no exercises folder here: run from the repository root (it has tutorials/exercises/), "
                             "or pass --dir FOLDER")


def _shown(path: Path) -> str:
    """A path as the student would type it: relative to the current folder when inside it."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)


_loaded = itertools.count()


def _load(exercise: Exercise, path: Path):
    """Import the student's file afresh (a new module each time: the file may have changed)."""
    name = f"minialign_exercise_{exercise.number}_{next(_loaded)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # triton.jit reads a kernel's source through its module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


# -- comparing -----------------------------------------------------------------------------


def _as_array(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (torch is never imported here)
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _split_outputs(exercise: Exercise, value) -> tuple:
    """The function's return value as a tuple of the exercise's outputs; ValueError when the
    count is wrong."""
    n = len(exercise.outputs)
    if n == 1:
        return (value,)
    if not isinstance(value, (tuple, list)) or len(value) != n:
        count = f"{len(value)} values" if isinstance(value, (tuple, list)) else f"one {type(value).__name__}"
        raise ValueError(f"returned {count}; expected a tuple of {n}: ({', '.join(exercise.outputs)})")
    return tuple(value)


def _index(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, index)) + "]" if index else ""


def _number(x: float) -> str:
    return f"{x:.7g}"


@dataclass
class _Difference:
    """Why one output is not the expected one, as report lines; None fields when it is fine."""

    lines: list[str]
    max_abs: float = 0.0


def _compare_output(name: str, yours, expected, atol: float, rtol: float, exact: bool) -> _Difference | None:
    """None when ``yours`` is close enough to ``expected``, else the lines that say how not."""
    if exact:
        yours = list(yours) if isinstance(yours, tuple) else yours
        if isinstance(yours, list) and yours == expected:
            return None
        lines = [f"{name}: yours    {yours!r}", f"{' ' * len(name)}  expected {expected!r}"]
        if isinstance(yours, list) and isinstance(expected, list):
            first = next((i for i, (a, b) in enumerate(zip(yours, expected)) if a != b), min(len(yours), len(expected)))
            a = repr(yours[first]) if first < len(yours) else "(nothing)"
            b = repr(expected[first]) if first < len(expected) else "(nothing)"
            lines.append(f"first difference at position {first}: yours {a}, expected {b}")
        return _Difference(lines)
    try:
        a = _as_array(yours)
    except Exception as error:  # noqa: BLE001 -- anything the student returned
        return _Difference([f"{name}: could not read it as an array ({error})"])
    e = _as_array(expected)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        return _Difference([f"{name}: is {type(yours).__name__} of dtype {a.dtype}, not an array of numbers"])
    if a.shape != e.shape:
        return _Difference([f"{name}: shape {a.shape}, expected {e.shape}"], float("inf"))
    errors = array_errors(a, e, atol=atol, rtol=rtol)
    if errors.ok:
        return None
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    if a.size == 1:  # a number: both values and the error say it all
        return _Difference([f"{name}: yours {_number(a64.item())}, expected {_number(e64.item())} (error "
                            f"{errors.max_abs:.3g}, beyond atol={atol:g}, rtol={rtol:g})"], errors.max_abs)
    first = errors.first_mismatch
    lines = [f"{name}: {errors.mismatches} of {errors.size} elements differ beyond atol={atol:g}, rtol={rtol:g}; "
             f"max abs error {errors.max_abs:.3g}",
             f"first wrong element {name}{_index(first)}: yours {_number(a64[first])}, expected {_number(e64[first])}"]
    if errors.nan_actual or errors.inf_actual or errors.nan_expected or errors.inf_expected:
        lines.append(f"NaN: yours {errors.nan_actual}, expected {errors.nan_expected}; "
                     f"inf: yours {errors.inf_actual}, expected {errors.inf_expected}")
    return _Difference(lines, errors.max_abs)


def _max_abs(yours, expected) -> float:
    a, e = _as_array(yours), _as_array(expected)
    return array_errors(a, e, atol=0.0, rtol=0.0).max_abs if a.size else 0.0


# -- running -------------------------------------------------------------------------------


def _quietly(fn: Callable, *args):
    """Call fn on private copies of the arguments (a function that writes into its inputs must
    not change the next comparison), with NumPy's overflow warnings silenced: the report says
    where the NaN and inf are."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*copy.deepcopy(args))


def _chain(error: BaseException):
    """An exception and the ones it wraps (Triton's interpreter wraps the kernel's errors)."""
    seen = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def _not_implemented(error: BaseException) -> bool:
    return any(isinstance(e, NotImplementedError) or "NotImplementedError" in str(e) for e in _chain(error))


def _raised_where(error: BaseException, path: Path) -> str:
    """The line of the student's file the exception came from (the deepest such frame)."""
    for e in reversed(_chain(error)):  # the innermost first: the kernel's line, not the launch
        frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve() == path.resolve()]
        if frames:
            frame = frames[-1]
            return f"{path.name}, line {frame.lineno}: {frame.line.strip() if frame.line else ''}"
    return ""


def _describe(error: BaseException) -> str:
    inner = _chain(error)[-1] if type(error).__name__ == "InterpreterError" else error
    message = " ".join(str(inner).split())
    return f"{type(inner).__name__}: {message}" if message else type(inner).__name__


def _run_reference(exercise: Exercise, fn: Callable, case: Case) -> tuple:
    """The reference's (or a known mistake's) outputs: NumPy functions called on the case as it is."""
    return _split_outputs(exercise, _quietly(fn, *case.args))


def _student(exercise: Exercise, fn: Callable, case: Case):
    """The student's return value; ``exercise.call`` adapts the case (NumPy arrays to torch
    tensors for a Triton launcher, say)."""
    if exercise.call is None:
        return _quietly(fn, *case.args)
    return _quietly(exercise.call, fn, *case.args)


def _explains(exercise: Exercise, mistake: Mistake, case: Case, yours: tuple | None, error: BaseException | None,
              outputs, every: bool) -> bool:
    """Whether ``mistake`` reproduces what the student got on ``case``: the same exception type, or
    the same values (within MISTAKE_MATCH_SLACK times the tolerance) in any of ``outputs``, or in
    all of them with ``every``."""
    try:
        theirs = _run_reference(exercise, mistake.variant, case)
    except Exception as mistake_error:  # noqa: BLE001 -- a mistake that raises, as the student's may
        return mistake.raises and error is not None and type(_chain(error)[-1]) is type(_chain(mistake_error)[-1])
    if error is not None:
        return False
    atol, rtol = case.tolerance or (exercise.atol, exercise.rtol)
    same = [_compare_output("", yours[i], theirs[i], atol * MISTAKE_MATCH_SLACK, rtol * MISTAKE_MATCH_SLACK,
                            exercise.exact) is None for i in outputs]
    return all(same) if every else any(same)


def _hints(exercise: Exercise, fn: Callable, cases: Sequence[Case], failing: int, yours: tuple | None,
           wrong: list[int], error: BaseException | None) -> list[str]:
    """The hints of the known mistakes that explain the student's result on ``cases[failing]``
    (each wrong output on its own, so that two mistakes made at once are both named). When several
    explain it, those that explain the student's results on the most other cases."""
    candidates = [m for m in exercise.mistakes if _explains(exercise, m, cases[failing], yours, error, wrong, False)]
    if len(candidates) > 1:
        votes = [0] * len(candidates)
        for number, case in enumerate(cases):
            if number == failing:
                continue
            try:
                other, other_error = _split_outputs(exercise, _student(exercise, fn, case)), None
            except Exception as raised:  # noqa: BLE001 -- the student's code
                other, other_error = None, raised
            for k, mistake in enumerate(candidates):
                votes[k] += _explains(exercise, mistake, case, other, other_error, range(len(exercise.outputs)), True)
        candidates = [m for m, v in zip(candidates, votes) if v == max(votes)]
    return list(dict.fromkeys(m.hint for m in candidates))


def check(exercise: Exercise, folder: Path, *, next_exercise: Exercise | None = None) -> Result:
    """Check the student's ``exercise.function`` in ``folder / exercise.file`` (see the module
    docstring). Raises ExerciseSetupError for what is not the student's code."""
    path = folder / exercise.file
    if not path.is_file():
        raise ExerciseSetupError(f"exercise {exercise.number}: no file {_shown(path)}")
    for module in exercise.needs:
        if importlib.util.find_spec(module) is None:
            raise ExerciseSetupError(
                f"exercise {exercise.number} needs {' and '.join(exercise.needs)} ({module} is not installed): "
                "pip install -e '.[dev]' (no GPU is needed: Triton's interpreter runs it on the CPU)")
    if exercise.prepare is not None:
        exercise.prepare()
    head = f"exercise {exercise.number} ({exercise.title})"
    try:
        module = _load(exercise, path)
    except Exception as error:  # noqa: BLE001 -- a syntax error, a bad import: the student's to fix
        if _not_implemented(error):
            return _not_implemented_result(exercise, path)
        lineno = getattr(error, "lineno", None)  # a SyntaxError's
        where = _raised_where(error, path) or (f"{path.name}, line {lineno}" if lineno else "")
        return Result(exercise, "raised", [f"{head}: {_shown(path)} does not import: {_describe(error)}"
                                           + (f" ({where})" if where else "")])
    fn = getattr(module, exercise.function, None)
    if not callable(fn):
        return Result(exercise, "raised", [f"{head}: {_shown(path)} has no function {exercise.function}"])

    cases = exercise.cases()
    outputs = []  # the student's, case by case
    for number in range(len(cases)):
        found = _run_case(exercise, fn, cases, number, path)
        if isinstance(found, Result):
            return found
        outputs.append(found)
    return _passed(exercise, cases, outputs, next_exercise)


def _not_implemented_result(exercise: Exercise, path: Path) -> Result:
    return Result(exercise, "not implemented", [
        f"exercise {exercise.number} ({exercise.title}): not implemented yet.",
        f"Write {exercise.writes or exercise.function} in {_shown(path)} (replace the `raise NotImplementedError`), "
        f"then run `minialign exercise check {exercise.number}` again.", f"read: {exercise.docs_path}"])


def _run_case(exercise: Exercise, fn: Callable, cases: Sequence[Case], number: int, path: Path) -> tuple | Result:
    """The student's outputs on ``cases[number]`` when they are right; else the report that says
    what is wrong (the wrong outputs, the line that raised, the hints)."""
    case = cases[number]
    head = f"exercise {exercise.number} ({exercise.title})"
    where = f"case {number + 1} of {len(cases)} ({case.name})"
    read = f"  read: {exercise.docs_path}"
    expected = _run_reference(exercise, exercise.reference, case)
    try:
        value = _student(exercise, fn, case)
    except Exception as error:  # noqa: BLE001 -- the student's code
        if _not_implemented(error):
            return _not_implemented_result(exercise, path)
        spot = _raised_where(error, path)
        hints = _hints(exercise, fn, cases, number, None, [], error)
        return Result(exercise, "raised", [f"{head}: your function raised on {where}:", f"  {_describe(error)}",
                                           *([f"  at {spot}"] if spot else []), *(f"  hint: {h}" for h in hints), read])
    if value is None:
        return Result(exercise, "wrong", [f"{head}: your function returned None on {where}; is a `return` missing?",
                                          read])
    try:
        yours = _split_outputs(exercise, value)
    except ValueError as error:
        return Result(exercise, "wrong", [f"{head}: on {where} your function {error}", read])
    atol, rtol = case.tolerance or (exercise.atol, exercise.rtol)
    differences = {i: d for i, name in enumerate(exercise.outputs)
                   if (d := _compare_output(name, yours[i], expected[i], atol, rtol, exercise.exact)) is not None}
    if not differences:
        return yours
    hints = _hints(exercise, fn, cases, number, yours, list(differences), None) or ([case.trap] if case.trap else [])
    return Result(exercise, "wrong", [f"{head}: wrong on {where}",
                                      *(f"  {line}" for d in differences.values() for line in d.lines),
                                      *(f"  hint: {h}" for h in hints), read])


def _passed(exercise: Exercise, cases: Sequence[Case], outputs: list[tuple], next_exercise: Exercise | None) -> Result:
    """The report of a function that matched the reference on every case: the max error against
    it and against each independent reference (which must agree too)."""
    head = f"exercise {exercise.number} ({exercise.title})"
    if exercise.exact:
        lines = [f"{head}: passed, {len(cases)} cases",
                 f"  matches {exercise.reference_name} on every case ({exercise.tolerance} compared exactly)"]
    else:
        worst = max(_max_abs(yours[i], expected) for case, yours in zip(cases, outputs)
                    for i, expected in enumerate(_run_reference(exercise, exercise.reference, case)))
        lines = [f"{head}: passed, {len(cases)} cases",
                 f"  matches {exercise.reference_name}: max abs error {worst:.2g} "
                 f"(tolerance atol {exercise.atol:g}, rtol {exercise.rtol:g}: {exercise.tolerance})"]
    for ref in exercise.also:
        if not ref.available():
            lines.append(f"  not compared with {ref.name}: {ref.missing}")
            continue
        worst = 0.0
        for number, (case, yours) in enumerate(zip(cases, outputs), start=1):
            expected = _split_outputs(exercise, _quietly(ref.compute, *case.args))
            atol, rtol = (max(a, b) for a, b in zip(case.tolerance or (0.0, 0.0), (ref.atol, ref.rtol)))
            for i, name in enumerate(exercise.outputs):
                difference = _compare_output(name, yours[i], expected[i], atol, rtol, exercise.exact)
                if difference is not None:
                    return Result(exercise, "wrong", [
                        f"{head}: agrees with {exercise.reference_name} but not with {ref.name} on case {number} "
                        f"of {len(cases)} ({case.name})", *(f"  {line}" for line in difference.lines),
                        f"  read: {exercise.docs_path}"])
                worst = max(worst, _max_abs(yours[i], expected[i]))
        lines.append(f"  matches {ref.name}: max abs error {worst:.2g}")
    if next_exercise is not None:
        lines.append(f"next: exercise {next_exercise.number}, {next_exercise.title} "
                     f"(`minialign exercise check {next_exercise.number}`)")
    return Result(exercise, "passed", lines)
