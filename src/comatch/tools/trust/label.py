"""``comatch label RUN``: label the suggested images in a local web page.

The page (``label_page.html``, package data) shows the run's suggested images (``comatch
suggest``'s ranking, read from ``RUN/suggestions.csv`` or computed on the spot and saved there)
grouped by predicted class with their probabilities, and a second tab of the most suspicious
unlabelled images (the unknown-class screen of :mod:`comatch.tools.trust.screen`, which also marks
the suggestions it flags). Every decision
is appended at once to ``RUN/labels.csv`` (:mod:`comatch.data.extra_labels`: header
``path,label,time``, a class name, ``exclude`` or ``undo``; each row forced to disk), so a
closed tab or a killed server loses nothing and a restart shows where it stopped.

What the server trusts:

- Images are served by their position in the list it built (``/image/N``); no part of a
  request becomes a filesystem path, and every listed file lies in the run's unlabelled folder.
- Decisions (``POST``) carry the per-run token written into the page it served.
- It listens on 127.0.0.1; another address needs ``--allow-remote``, and requests naming a
  host other than the one it listens on are refused (DNS rebinding).
"""

from __future__ import annotations

import argparse
import csv
import hmac
import json
import mimetypes
import re
import secrets
import sys
import threading
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from comatch.data.extra_labels import EXCLUDE, UNDO, append_decision, now, read_rows, standing
from comatch.errors import UserError

LABELS_FILE = "labels.csv"
SUGGESTIONS_FILE = "suggestions.csv"
SUSPICIOUS_FILE = "suspicious.csv"
DEFAULT_SUGGESTIONS = 50  # also in the `label` parser's help (tools.trust.commands)
DEFAULT_SUSPICIOUS = 24
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_BODY = 4096


@dataclass
class Item:
    """One image on the page.

    Attributes:
        index: its position in the page's list (``/image/INDEX``).
        path: the file, in the run's unlabelled folder.
        name: the file name shown.
        tab: ``suggested`` or ``suspicious``.
        rank: its place in that tab's ranking.
        predicted, probability: the model's class and its (calibrated, smoothed) probability.
        score: the suggestion's score, or the out-of-distribution score.
        unknown: the unknown-class screen flags it (:mod:`comatch.tools.trust.screen`).
    """

    index: int
    path: str
    name: str
    tab: str
    rank: int
    predicted: str
    probability: float
    score: float
    unknown: bool = False


class LabelSession:
    """The images of a run, its classes and the decisions file.

    Args:
        run_dir: the run directory (``labels.csv`` goes there).
        class_names: the run's classes.
        items: the images on the page.
        token: the per-run token the page must send with each decision.
    """

    def __init__(self, run_dir: Path, class_names: list[str], items: list[Item], token: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.class_names = list(class_names)
        self.items = items
        self.token = token or secrets.token_urlsafe(24)
        self.labels_file = self.run_dir / LABELS_FILE
        self._lock = threading.Lock()

    def decisions(self) -> dict[int, str]:
        """``{item index: label}`` standing for the page's items."""
        by_path = standing(read_rows(self.labels_file))
        return {item.index: by_path[item.path] for item in self.items if item.path in by_path}

    def decide(self, index: int, label: str) -> None:
        """Record ``label`` (a class name or ``exclude``) for item ``index``.

        Raises:
            ValueError: no such item or label.
        """
        if not 0 <= index < len(self.items):
            raise ValueError(f"no image {index}")
        if label != EXCLUDE and label not in self.class_names:
            raise ValueError(f"unknown label {label!r}")
        with self._lock:
            append_decision(self.labels_file, self.items[index].path, label, now())

    def undo(self) -> int | None:
        """Take back the latest standing decision on one of the page's images; its index, or None."""
        with self._lock:
            events: list[str] = []
            for path, label, _ in read_rows(self.labels_file):
                if label == UNDO:
                    for i in range(len(events) - 1, -1, -1):
                        if events[i] == path:
                            del events[i]
                            break
                else:
                    events.append(path)
            where: dict[str, int] = {}
            for item in self.items:  # a file in both tabs: its suggested entry
                where.setdefault(item.path, item.index)
            last = next((p for p in reversed(events) if p in where), None)
            if last is None:
                return None
            append_decision(self.labels_file, last, UNDO, now())
            return where[last]

    def state(self) -> dict[str, Any]:
        """What the page shows: classes, items, decisions and progress."""
        decided = self.decisions()
        suggested = [i for i in self.items if i.tab == "suggested"]
        return {"run": str(self.run_dir), "classes": self.class_names, "exclude": EXCLUDE,
                "items": [asdict(i) | {"path": Path(i.path).name} for i in self.items],
                "decisions": {str(k): v for k, v in decided.items()},
                "progress": {"done": sum(1 for i in suggested if i.index in decided), "total": len(suggested)},
                "labels_file": str(self.labels_file)}


def page_html(session: LabelSession) -> bytes:
    """The page, with the session's token and run name written in."""
    text = resources.files("comatch.tools.trust").joinpath("label_page.html").read_text(encoding="utf-8")
    title = json.dumps(session.run_dir.name).replace("<", "\\u003c")
    return text.replace("__TOKEN__", session.token).replace("__TITLE__", title).encode("utf-8")


IMAGE_ROUTE = re.compile(r"/image/(\d{1,9})")


class LabelHandler(BaseHTTPRequestHandler):
    """The page, the images by index, the state and the decisions; 404 for anything else."""

    server: "LabelServer"
    server_version = "comatch-label"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- the base class's name
        """Quiet: the terminal shows what the command prints, not every request."""

    def _send(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _host_allowed(self) -> bool:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        return self.server.allow_any_host or host in LOOPBACK

    def do_GET(self) -> None:  # noqa: N802 -- http.server's name
        """``/``, ``/api/state``, ``/image/N``."""
        if not self._host_allowed():
            return self._send(403, b"forbidden host\n")
        route = self.path.split("?", 1)[0]
        session = self.server.session
        if route == "/":
            return self._send(200, page_html(session), "text/html; charset=utf-8")
        if route == "/api/state":
            return self._json(session.state())
        match = IMAGE_ROUTE.fullmatch(route)
        if match and int(match.group(1)) < len(session.items):
            path = Path(session.items[int(match.group(1))].path)
            try:
                body = path.read_bytes()
            except OSError:
                return self._send(404, b"not found\n")
            return self._send(200, body, mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        return self._send(404, b"not found\n")

    def do_POST(self) -> None:  # noqa: N802 -- http.server's name
        """``/api/decide`` ``{token, index, label}`` and ``/api/undo`` ``{token}``."""
        if not self._host_allowed():
            return self._send(403, b"forbidden host\n")
        route = self.path.split("?", 1)[0]
        if route not in ("/api/decide", "/api/undo"):
            return self._send(404, b"not found\n")
        length = int(self.headers.get("Content-Length") or 0) if (self.headers.get("Content-Length") or "0").isdigit() else 0
        if not self.headers.get("Content-Type", "").startswith("application/json") or not 0 < length <= MAX_BODY:
            return self._send(400, b"a JSON body is expected\n")
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            return self._send(400, b"a JSON body is expected\n")
        session = self.server.session
        if not isinstance(body, dict) or not hmac.compare_digest(str(body.get("token", "")), session.token):
            return self._send(403, b"this page's token is missing or wrong: reload the page the server serves\n")
        if route == "/api/undo":
            undone = session.undo()
            return self._json({"undone": undone, **session.state()})
        try:
            session.decide(int(body.get("index", -1)), str(body.get("label", "")))
        except (TypeError, ValueError) as err:
            return self._json({"error": str(err)}, 400)
        return self._json(session.state())


class LabelServer(ThreadingHTTPServer):
    """A threading HTTP server holding one :class:`LabelSession`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], session: LabelSession, allow_any_host: bool = False) -> None:
        self.session = session
        self.allow_any_host = allow_any_host
        super().__init__(address, LabelHandler)

    @property
    def url(self) -> str:
        """The page's address."""
        host, port = self.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}/"


def start_server(session: LabelSession, host: str = "127.0.0.1", port: int = 0,
                 allow_remote: bool = False) -> LabelServer:
    """Bind the server (port 0: a free one); serve it with ``serve_forever``.

    Raises:
        UserError: a non-loopback host without ``allow_remote``, or the port is taken.
    """
    if host not in LOOPBACK and not allow_remote:
        raise UserError(f"--host {host} would let other machines label this run; add --allow-remote to mean it, "
                        "or leave --host out (127.0.0.1)")
    try:
        return LabelServer((host, port), session, allow_any_host=allow_remote)
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror}); choose another --port, or 0 for a free one") \
            from None


# ------------------------------------------------------------------ building the list
def _inside(path: str, folder: Path) -> bool:
    """Whether ``path`` is a file inside ``folder`` (symbolic links resolved)."""
    try:
        return Path(path).resolve().is_relative_to(folder.resolve()) and Path(path).is_file()
    except OSError:
        return False


def unlabelled_folder(run_dir: Path) -> Path:
    """The run's unlabelled folder (from its config).

    Raises:
        UserError: not a run of the user's own folders with an unlabelled folder.
    """
    from comatch.tools.trust.suggest import run_config

    config = run_config(run_dir)
    if config.data.dataset != "folder" or not config.data.unlabeled:
        raise UserError(f"{run_dir} is not a run of your own folders with --unlabeled; `comatch label` shows files "
                        "of an unlabelled folder (for benchmarks use `comatch suggest --next-list`)")
    return Path(config.data.unlabeled)


def read_ranked(path: Path, folder: Path, tab: str, start: int) -> list[Item]:
    """Items from a ranking CSV (``suggest``'s columns, or ``path,score,predicted,probability``),
    leaving out any row whose file is not in ``folder``."""
    items: list[Item] = []
    with path.open(newline="") as handle:
        for n, row in enumerate(csv.DictReader(handle), 1):
            file = row.get("path") or ""
            if not file or not _inside(file, folder):
                continue
            items.append(Item(start + len(items), file, Path(file).name, tab, int(row.get("rank") or n),
                              row.get("predicted", ""), float(row.get("probability") or 0), float(row.get("score") or 0),
                              row.get("unknown") == "yes"))
    return items


def write_suspicious(rows: list[tuple[str, float, str, float]], path: Path, threshold: float | None = None) -> None:
    """``rank,path,score,predicted,probability`` rows (and ``unknown``: yes/no, with the screen's
    ``threshold``)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "path", "score", "predicted", "probability", *(["unknown"] if threshold is not None else [])])
        for rank, (file, score, predicted, probability) in enumerate(rows, 1):
            flag = ["yes" if score > threshold else "no"] if threshold is not None else []
            writer.writerow([rank, file, f"{score:.6f}", predicted, f"{probability:.6f}", *flag])


def most_suspicious(run_dir: Path, k: int, device: str) -> tuple[list[tuple[str, float, str, float]], float]:
    """The ``k`` unlabelled files the unknown-class screen scores highest (:mod:`comatch.tools.trust.screen`):
    ``(path, score, predicted class, probability)``, and the screen's threshold; saves the
    screen as ``RUN/screen.json``."""
    from comatch.tools.trust.pool import path_of
    from comatch.tools.trust.screen import SCREEN_FILE, save_screen, screen_pool

    fitted = screen_pool(run_dir, device)
    if not (Path(run_dir) / SCREEN_FILE).is_file():
        save_screen(fitted.screen, run_dir)
    result = []
    for i in fitted.scores.argsort(descending=True)[:k].tolist():
        path = path_of(fitted.data.unlabelled, fitted.rows[i])
        if path is not None:
            result.append((path, float(fitted.scores[i]), fitted.data.class_names[int(fitted.predicted[i])],
                           float(fitted.confidence[i])))
    return result, fitted.screen.threshold


def build_session(run_dir: Path, n: int | None, suggestions: Path | None, device: str,
                  suspicious: int = DEFAULT_SUSPICIOUS, say: Any = print) -> LabelSession:
    """The page's images: the ranking (``suggestions``, else ``RUN/suggestions.csv``, else
    ``suggest`` on the spot, saved there) and the files the unknown-class screen scores highest
    (``RUN/suspicious.csv``, computed once).

    Raises:
        UserError: not a folder run, no checkpoint to rank with, nothing to show.
    """
    from comatch.tools.trust.suggest import suggest, write_csv

    run_dir = Path(run_dir)
    folder = unlabelled_folder(run_dir)
    saved = run_dir / SUGGESTIONS_FILE
    source = suggestions or (saved if saved.is_file() and n is None else None)
    if suggestions is not None and not suggestions.is_file():
        raise UserError(f"--suggestions {suggestions} does not exist; write it with `comatch suggest RUN --n K --out "
                        "FILE`, or leave the option out to rank on the spot")
    if source is None:
        say(f"label: ranking the unlabelled images of {run_dir} (comatch suggest --n {n or DEFAULT_SUGGESTIONS})")
        ranked, _data = suggest(run_dir, n or DEFAULT_SUGGESTIONS, device=device)
        with saved.open("w", newline="") as handle:
            write_csv(ranked, handle)
        source = saved
    items = read_ranked(source, folder, "suggested", 0)
    odd = run_dir / SUSPICIOUS_FILE
    if suspicious and not odd.is_file() and any((run_dir / "checkpoints").glob("*.pt")):
        ranked, threshold = most_suspicious(run_dir, suspicious, device)
        write_suspicious(ranked, odd, threshold)
    if suspicious and odd.is_file():
        items += read_ranked(odd, folder, "suspicious", len(items))[:suspicious]
    if not items:
        raise UserError(f"no image of {source} lies in the run's unlabelled folder {folder}; rank again with "
                        f"`comatch label {run_dir} --n K`")
    class_names = run_classes(run_dir)
    return LabelSession(run_dir, class_names, items)


def run_classes(run_dir: Path) -> list[str]:
    """The run's class names (``data.json``, else the labelled folder's sub-folders)."""
    data = Path(run_dir) / "data.json"
    if data.is_file():
        return list(json.loads(data.read_text()).get("classes", []))
    from comatch.data.folders import scan_class_folder
    from comatch.tools.trust.suggest import run_config

    return scan_class_folder(run_config(run_dir).data.labeled, "labelled")[0]


# ------------------------------------------------------------------ applying the decisions
def planned_moves(run_dir: Path) -> list[tuple[Path, Path]]:
    """``(file, destination)`` for each standing class decision: into ``LABELED/CLASS/``,
    with ``_1``, ``_2``... added where a file of that name exists."""
    from comatch.tools.trust.suggest import run_config

    labeled = Path(run_config(run_dir).data.labeled)
    moves, taken = [], set()
    for path, label in standing(read_rows(Path(run_dir) / LABELS_FILE)).items():
        source = Path(path)
        if label == EXCLUDE or not source.is_file():
            continue
        target, n = labeled / label / source.name, 0
        while target.exists() or target in taken:
            n += 1
            target = labeled / label / f"{source.stem}_{n}{source.suffix}"
        taken.add(target)
        moves.append((source, target))
    return moves


def apply_decisions(run_dir: Path, dry_run: bool, say: Any = print) -> int:
    """Move the labelled files into their class folders (``dry_run``: only say what would move)."""
    import shutil

    moves = planned_moves(run_dir)
    for source, target in moves:
        say(f"{'would move' if dry_run else 'move'} {source} -> {target}")
        if not dry_run:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(source), str(target))
    say(f"label: {'would move' if dry_run else 'moved'} {len(moves)} file(s) into the class folders"
        + ("" if dry_run else "; train again without --extra-labels (the files are labelled where they are now)"))
    return 0


# ------------------------------------------------------------------ the command
def cmd_label(args: argparse.Namespace) -> int:
    """``comatch label RUN_DIR``."""
    if args.dry_run and not args.apply:
        raise UserError("--dry-run goes with --apply; add --apply to list the moves")
    if args.apply:
        unlabelled_folder(args.run_dir)
        return apply_decisions(args.run_dir, args.dry_run)
    if args.from_label_studio is not None:
        from comatch.tools.trust.label_studio import import_export

        folder = unlabelled_folder(args.run_dir)
        count = import_export(args.from_label_studio, args.run_dir / LABELS_FILE, folder, run_classes(args.run_dir))
        print(f"label: {count} decision(s) from {args.from_label_studio} appended to {args.run_dir / LABELS_FILE}")
        return 0
    if args.host not in LOOPBACK and not args.allow_remote:
        start_server(LabelSession(args.run_dir, [], []), args.host, 0, False)  # raises the one-line error
    session = build_session(args.run_dir, args.n, args.suggestions, args.device)
    if args.to_label_studio is not None:
        from comatch.tools.trust.label_studio import write_tasks

        write_tasks(session, args.to_label_studio)
        print(f"label: {sum(i.tab == 'suggested' for i in session.items)} task(s) written to {args.to_label_studio}")
        return 0
    server = start_server(session, args.host, args.port, args.allow_remote)
    state = session.state()["progress"]
    print(f"label: serving {state['total']} suggested image(s) ({state['done']} labelled) at {server.url} ; "
          f"decisions go to {session.labels_file}; Ctrl-C stops", flush=True)
    if not args.no_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("label: stopped; every decision is in " + str(session.labels_file), file=sys.stderr)
    finally:
        server.server_close()
    return 0
