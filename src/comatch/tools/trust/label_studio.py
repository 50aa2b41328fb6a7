"""Label Studio interchange: the suggestions as pre-annotated tasks, and an export back as labels.

Tasks (Label Studio's JSON import with predictions) look like::

    {"data": {"image": "/data/local-files/?d=home/me/pool/u1.png", "path": "/home/me/pool/u1.png"},
     "predictions": [{"model_version": "comatch", "score": 0.62,
                      "result": [{"from_name": "choice", "to_name": "image", "type": "choices",
                                  "value": {"choices": ["cat"]}, "score": 0.62}]}]}

``data.image`` is a local-files URL relative to the filesystem root (start Label Studio with
``LOCAL_FILES_SERVING_ENABLED=true LOCAL_FILES_DOCUMENT_ROOT=/``); ``data.path`` keeps the file
path for the way back. The labelling configuration (written beside the tasks as ``.xml``) has
one ``Choice`` per class and ``exclude`` for "not one of my classes".

An export (Label Studio's JSON export: tasks with ``annotations``, each with ``result`` items
whose ``value.choices`` holds the chosen class) comes back as rows of ``labels.csv``: for each
task, its latest annotation that was not cancelled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit
from xml.sax.saxutils import quoteattr

from comatch.data.extra_labels import EXCLUDE, append_decision, now
from comatch.errors import UserError

if TYPE_CHECKING:
    from comatch.tools.trust.label import LabelSession

FROM_NAME, TO_NAME = "choice", "image"
LOCAL_FILES = "/data/local-files/?d="


def task(path: str, predicted: str, probability: float, model_version: str = "comatch") -> dict[str, Any]:
    """One Label Studio task with the model's prediction."""
    absolute = Path(path).absolute()
    image = LOCAL_FILES + quote(absolute.as_posix().lstrip("/"))
    result = {"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
              "value": {"choices": [predicted]}, "score": round(probability, 6)}
    return {"data": {TO_NAME: image, "path": str(absolute)},
            "predictions": [{"model_version": model_version, "score": round(probability, 6), "result": [result]}]}


def labelling_config(class_names: list[str]) -> str:
    """The Label Studio labelling configuration matching :func:`task`."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in [*class_names, EXCLUDE])
    return (f'<View>\n  <Image name="{TO_NAME}" value="${TO_NAME}"/>\n'
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
            f"{choices}\n  </Choices>\n</View>\n")


def write_tasks(session: LabelSession, out: Path) -> Path:
    """Write the session's suggested images as tasks to ``out`` and the configuration beside it
    (``out`` with ``.xml``); returns the configuration's path."""
    tasks = [task(i.path, i.predicted, i.probability) for i in session.items if i.tab == "suggested"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tasks, indent=1) + "\n")
    config = out.with_suffix(".xml")
    config.write_text(labelling_config(session.class_names))
    return config


def _choice(annotation: dict[str, Any]) -> str | None:
    """The chosen class of one annotation (its first ``choices`` result), or None."""
    for result in annotation.get("result") or []:
        if isinstance(result, dict) and result.get("type") == "choices":
            choices = (result.get("value") or {}).get("choices") or []
            if choices:
                return str(choices[0])
    return None


def _file_of(data: dict[str, Any], folder: Path) -> Path | None:
    """The unlabelled file a task names: ``data.path``, else its local-files URL."""
    if data.get("path"):
        return Path(data["path"])
    url = str(data.get(TO_NAME) or "")
    relative = parse_qs(urlsplit(url).query).get("d", [""])[0]
    if not relative:
        return None
    absolute = Path("/") / relative
    if absolute.is_file():
        return absolute
    matches = [p for p in folder.rglob(Path(relative).name) if p.as_posix().endswith("/" + relative.lstrip("/"))]
    return matches[0] if len(matches) == 1 else None


def read_export(export: Path, folder: Path, class_names: list[str]) -> list[tuple[str, str]]:
    """``(file path, label)`` of each annotated task of a Label Studio JSON export.

    Raises:
        UserError: not a JSON list of tasks, or a choice that is no class of the run.
    """
    try:
        tasks = json.loads(Path(export).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the Label Studio export {export} ({err}); export the project as JSON") from None
    if not isinstance(tasks, list):
        raise UserError(f"{export} is not a Label Studio JSON export (a list of tasks); export the project as JSON")
    decisions = []
    for item in tasks:
        annotations = [a for a in (item.get("annotations") or []) if not a.get("was_cancelled")]
        chosen = [c for c in map(_choice, annotations) if c is not None]
        file = _file_of(item.get("data") or {}, folder)
        if not chosen or file is None:
            continue
        label = chosen[-1]
        if label != EXCLUDE and label not in class_names:
            raise UserError(f"{export} chooses {label!r}, which is not a class of the run (its classes: "
                            f"{', '.join(class_names)}; or '{EXCLUDE}'); rename the choice in Label Studio")
        decisions.append((str(file), label))
    return decisions


def import_export(export: Path, labels_file: Path, folder: Path, class_names: list[str]) -> int:
    """Append the decisions of a Label Studio export to ``labels_file``; returns how many."""

    decisions = read_export(export, folder, class_names)
    for path, label in decisions:
        append_decision(labels_file, path, label, now())
    return len(decisions)
