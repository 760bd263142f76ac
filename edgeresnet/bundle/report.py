"""report.json as commands read it back from a bundle. It is rewritten after export (`build`
adds its rows), so it has no hash: every field a command reads is type-checked instead, and a
malformed file is one InputError, never a KeyError deep inside `bench` or `build`."""

from __future__ import annotations

from ..errors import InputError
from ..core.limits import MAX_SIDE
from ..core.outdir import read_json
from .files import EDITED, Bundle

NAME = "report.json"


def read_report(bundle: Bundle) -> dict:
    """The bundle's report.json, every field that `bench`, `build` and `eval` read checked."""
    path = bundle.scratch(NAME)
    data = read_json(path, hint="pass an export directory (made by `edgeresnet export`)")
    problem = _problem(data)
    if problem:
        raise InputError(f"{path} is malformed ({problem})", hint=EDITED)
    return data


def _problem(data) -> str | None:
    """What is wrong with a report's shape, or None."""
    from ..report import Report
    from ..report.schema import row_problem

    if not isinstance(data, dict):
        return "not a JSON object"
    model = data.get("model")
    if not isinstance(model, dict):
        return "'model' is not an object"
    shape = model.get("input_shape")
    if not isinstance(shape, list) or len(shape) != 4 or \
            not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in shape):
        return f"'model.input_shape' is not 4 sizes from 1 to {MAX_SIDE}"
    for key in ("calibration", "evaluation", "machine"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"'{key}' is not an object"
    results = data.get("results")
    if not isinstance(results, list):
        return "'results' is not a list of rows"
    problem = next(filter(None, map(row_problem, results)), None)
    if problem:
        return problem
    try:
        Report.from_dict(data)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
