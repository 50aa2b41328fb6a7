"""``comatch label``: the page's server, its decisions file, --apply and Label Studio interchange."""

from __future__ import annotations

import csv
import http.client
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from comatch.cli import main
from comatch.data.extra_labels import read_decisions, read_rows
from comatch.errors import UserError
from comatch.tools.trust.label import LabelSession, build_session, start_server
from comatch.tools.trust.label_studio import labelling_config, read_export, task
from datafiles import write_class_folder

TINY = ["--iterations", "2", "optim.batch_size=2", "optim.mu=1", "data.num_workers=0", "run.eval_every=2",
        "run.log_every=1", "model.arch=wrn10_1", "data.image_size=16", "run.tensorboard=false", "run.report=false",
        "run.threads=1"]


def train_folder_run(root: Path) -> Path:
    """A tiny run of own folders: classes a and b, 12 unlabelled files."""
    write_class_folder(root / "lab", ["a", "b"], 5, size=(16, 16))
    write_class_folder(root / "pool", ["mixed"], 12, seed=4, size=(16, 16))
    out = root / "run"
    assert main(["train", "--labeled", str(root / "lab"), "--unlabeled", str(root / "pool"), "--out", str(out),
                 "--device", "cpu", *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_folder_run(tmp_path_factory.mktemp("label"))


@pytest.fixture()
def served(run):
    for name in ("labels.csv",):
        (run / name).unlink(missing_ok=True)
    session = build_session(run, None, None, "cpu")
    server = start_server(session)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield session, server
    server.shutdown()
    server.server_close()


def request(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    return response.status, response.read()


def test_the_page_lists_the_suggested_and_the_suspicious_files(run, served):
    session, server = served
    suggested = [i for i in session.items if i.tab == "suggested"]
    odd = [i for i in session.items if i.tab == "suspicious"]
    assert len(suggested) == 12 and 0 < len(odd) <= 12  # every unlabelled file is a candidate
    assert {Path(i.path).parent for i in session.items} == {run.parent / "pool" / "mixed"}
    with (run / "suggestions.csv").open() as handle:
        assert [r["path"] for r in csv.DictReader(handle)] == [i.path for i in suggested]
    from comatch.tools.trust.screen import Screen
    screen = Screen.from_json(json.loads((run / "screen.json").read_text()))
    with (run / "suspicious.csv").open() as handle:  # the screen's highest scores, flagged by its threshold
        ranked = list(csv.DictReader(handle))
    scores = [float(r["score"]) for r in ranked]
    assert scores == sorted(scores, reverse=True) and [r["path"] for r in ranked] == [i.path for i in odd]
    assert [i.unknown for i in odd] == [s > screen.threshold for s in scores]
    status, page = request(server, "GET", "/")
    assert status == 200 and session.token.encode() in page
    status, body = request(server, "GET", "/api/state")
    state = json.loads(body)
    assert status == 200 and state["classes"] == ["a", "b"] and state["progress"] == {"done": 0, "total": 12}
    assert all(i["predicted"] in ("a", "b") and 0 <= i["probability"] <= 1 for i in state["items"])
    status, image = request(server, "GET", "/image/3")
    assert status == 200 and image == Path(session.items[3].path).read_bytes()


@pytest.mark.parametrize("path", [
    "/../../etc/passwd", "/image/../../../etc/passwd", "/image/..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/etc/passwd",
    "/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/image/..%252f..%252fetc%252fpasswd", "/etc/passwd",
    "/image/-1", "/image/999", "/image/1/../../etc/passwd", "//etc/passwd", "/image/0%00.png",
    "/static/..%c0%af..%c0%afetc/passwd", "/image/\\..\\..\\etc\\passwd"])
def test_no_request_reaches_a_file_outside_the_list(served, path):
    status, body = request(served[1], "GET", path)
    assert status == 404 and b"root:" not in body


def test_decisions_need_the_page_token_and_are_appended_at_once(run, served):
    session, server = served
    first, second = session.items[0], session.items[1]
    assert request(server, "POST", "/api/decide", {"index": 0, "label": "a"})[0] == 403
    assert request(server, "POST", "/api/decide", {"token": "guess", "index": 0, "label": "a"})[0] == 403
    assert request(server, "POST", "/api/decide", {"token": session.token, "index": 0, "label": "wolf"})[0] == 400
    assert request(server, "POST", "/api/decide", {"token": session.token, "index": 0, "label": "a"},
                   headers={"Host": "evil.example:80"})[0] == 403
    assert request(server, "POST", "/api/decide", {"token": session.token, "index": 0, "label": "a"},
                   headers={"Content-Type": "text/plain"})[0] == 400  # a cross-site form cannot send JSON
    assert request(server, "POST", "/api/decide", {"token": session.token, "index": 0, "label": "a"},
                   headers={"Content-Length": "x"})[0] == 400
    assert not (run / "labels.csv").exists()
    assert request(server, "POST", "/api/decide", {"token": session.token, "index": 0, "label": "a"})[0] == 200
    assert request(server, "POST", "/api/decide", {"token": session.token, "index": 1, "label": "exclude"})[0] == 200
    assert read_decisions(run / "labels.csv") == {first.path: "a", second.path: "exclude"}
    status, body = request(server, "POST", "/api/undo", {"token": session.token})
    assert status == 200 and json.loads(body)["undone"] == 1
    assert read_decisions(run / "labels.csv") == {first.path: "a"}
    rows = read_rows(run / "labels.csv")
    assert [r[1] for r in rows] == ["a", "exclude", "undo"] and all(r[2].endswith("Z") for r in rows)
    assert (run / "labels.csv").read_text().splitlines()[0] == "path,label,time"
    again = build_session(run, None, None, "cpu")  # a restart: same list, decisions kept
    assert [i.path for i in again.items] == [i.path for i in session.items]
    same = {i.index for i in again.items if i.path == first.path}  # a file in both tabs is decided in both
    assert again.decisions() == {i: "a" for i in same} and again.state()["progress"]["done"] == 1


def test_listening_beyond_loopback_needs_the_flag(run, capsys):
    with pytest.raises(UserError, match="--allow-remote"):
        start_server(LabelSession(run, ["a"], []), "0.0.0.0", 0)
    assert main(["label", str(run), "--host", "0.0.0.0", "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("comatch: error: --host 0.0.0.0 would let other machines label this run") and err.count("\n") == 1


def test_a_benchmark_run_is_refused_in_one_line(tmp_path, capsys):
    assert main(["train", "--show-config"]) == 0
    (tmp_path / "config.yaml").write_text(capsys.readouterr().out)
    assert main(["label", str(tmp_path), "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert "is not a run of your own folders" in err and err.count("\n") == 1


def test_apply_moves_the_labelled_files_into_their_class_folders(tmp_path, capsys):
    out = train_folder_run(tmp_path)
    pool = sorted((tmp_path / "pool").rglob("*.png"))
    session = LabelSession(out, ["a", "b"], [])
    from comatch.data.extra_labels import append_decision
    append_decision(session.labels_file, str(pool[0]), "b", "t")
    append_decision(session.labels_file, str(pool[1]), "exclude", "t")
    assert main(["label", str(out), "--apply", "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert f"would move {pool[0]} -> {tmp_path / 'lab' / 'b' / pool[0].name}" in said and pool[0].is_file()
    assert main(["label", str(out), "--apply"]) == 0
    assert not pool[0].exists() and (tmp_path / "lab" / "b" / pool[0].name).is_file() and pool[1].is_file()
    assert main(["label", str(out), "--dry-run"]) == 2


def test_label_studio_tasks_and_an_export_back(run, tmp_path):
    file = run.parent / "pool" / "mixed" / "mixed_3.png"
    t = task(str(file), "b", 0.625)
    assert t["data"] == {"image": "/data/local-files/?d=" + str(file).lstrip("/"), "path": str(file)}
    assert t["predictions"][0]["result"][0] == {"from_name": "choice", "to_name": "image", "type": "choices",
                                                "value": {"choices": ["b"]}, "score": 0.625}
    assert '<Choice value="exclude"/>' in labelling_config(["a", "b"])
    other = run.parent / "pool" / "mixed" / "mixed_4.png"
    export = [  # Label Studio's JSON export: tasks with annotations (a cancelled one, one without a choice)
        {"id": 1, "data": t["data"], "annotations": [
            {"id": 10, "was_cancelled": False, "result": [
                {"id": "r1", "from_name": "choice", "to_name": "image", "type": "choices", "origin": "manual",
                 "value": {"choices": ["a"]}}]},
            {"id": 11, "was_cancelled": True, "result": [
                {"from_name": "choice", "to_name": "image", "type": "choices", "value": {"choices": ["b"]}}]}],
         "predictions": t["predictions"]},
        {"id": 2, "data": {"image": "/data/local-files/?d=" + str(other).lstrip("/")}, "annotations": [
            {"id": 12, "result": [{"from_name": "choice", "to_name": "image", "type": "choices",
                                   "value": {"choices": ["exclude"]}}]}]},
        {"id": 3, "data": {"image": "/data/local-files/?d=x/none.png"}, "annotations": [{"id": 13, "result": []}]},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    assert read_export(path, run.parent / "pool", ["a", "b"]) == [(str(file), "a"), (str(other), "exclude")]
    labels = tmp_path / "labels.csv"
    out = tmp_path / "tasks.json"
    assert main(["label", str(run), "--to-label-studio", str(out), "--device", "cpu"]) == 0
    assert len(json.loads(out.read_text())) == 12 and out.with_suffix(".xml").is_file()
    export[0]["annotations"][0]["result"][0]["value"]["choices"] = ["wolf"]
    path.write_text(json.dumps(export))
    with pytest.raises(UserError, match="'wolf', which is not a class"):
        read_export(path, run.parent / "pool", ["a", "b"])
    assert not labels.exists()


def test_the_command_serves_the_page_until_stopped(run):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "comatch", "label", str(run), "--no-browser", "--port", "0",
                                "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()  # waits for the server's first line
        assert line.startswith("label: serving 12 suggested image(s)"), line + process.stderr.read()
        url = line.split(" at ", 1)[1].split(" ", 1)[0]
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        assert host == "127.0.0.1"
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_report_names_suspicious_images_by_file(run):
    assert main(["report", str(run), "--device", "cpu"]) == 0
    with (run / "plots" / "outliers.csv").open() as handle:
        listed = list(csv.DictReader(handle))
    pool = {str(p) for p in (run.parent / "pool").rglob("*.png")}
    assert 0 < len(listed) <= 16 and all(r["path"] in pool for r in listed)
    scores = [float(r["score"]) for r in listed]
    assert scores == sorted(scores, reverse=True)
    assert Path(listed[0]["path"]).name in (run / "report.html").read_text()
    with (run / "plots" / "mistakes.csv").open() as handle:
        mistakes = list(csv.DictReader(handle))
    held_out = {str(p) for p in (run.parent / "lab").rglob("*.png")}  # the test hold-out of the labelled folder
    assert all(m["path"] in held_out and m["label"] != m["predicted"] and m["label"] == Path(m["path"]).parent.name
               for m in mistakes)
    assert "Most confident mistakes" in (run / "report.html").read_text()


def test_the_screen_by_hand():
    import torch

    from comatch.tools.trust.screen import Screen, fit_screen

    labelled = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pool = torch.tensor([[0.6, 0.8], [0.8, 0.6], [-1.0, 0.0]])
    probs = torch.tensor([[0.02, 0.98], [0.5, 0.5], [0.5, 0.5]])  # only the first is confident (>= 0.95)
    screen = fit_screen(labelled, torch.tensor([0, 1]), pool, probs, ["a", "b"])
    m_b = torch.nn.functional.normalize(torch.tensor([0.6, 1.8]), dim=0)  # class b: labelled (0,1) and (0.6,0.8)
    assert torch.allclose(screen.prototypes, torch.stack([torch.tensor([1.0, 0.0]), m_b]), atol=1e-6)
    scores = screen.scores(pool)
    nearest = [float(m_b @ pool[0]), max(0.8, float(m_b @ pool[1])), max(-1.0, float(m_b @ pool[2]))]
    assert torch.allclose(scores, 1 - torch.tensor(nearest), atol=1e-6)
    reference = screen.scores(torch.cat([labelled, pool[:1]]))
    assert screen.threshold == pytest.approx(float(torch.quantile(reference.double(), 0.95)))
    assert screen.flags(pool).tolist() == [False, True, True]
    again = Screen.from_json(json.loads(json.dumps(screen.to_json())))
    assert torch.allclose(again.scores(pool), scores, atol=1e-6) and again.threshold == screen.threshold


def test_predict_and_suggest_use_the_runs_screen(run, tmp_path, capsys):
    from comatch.tools.trust.screen import Screen

    out = tmp_path / "p.csv"
    pool = run.parent / "pool"
    assert main(["predict", str(run), str(pool), "--screen", "--out", str(out), "--device", "cpu"]) == 0
    screen = Screen.from_json(json.loads((run / "screen.json").read_text()))
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and all(r["unknown_score"] for r in rows)
    assert all((r["class"] == "unknown") == (float(r["unknown_score"]) > screen.threshold) for r in rows)
    suggestions = tmp_path / "s.csv"
    assert main(["suggest", str(run), "--n", "12", "--out", str(suggestions), "--device", "cpu"]) == 0
    with suggestions.open() as handle:
        ranked = {r["path"]: r for r in csv.DictReader(handle)}
    for r in rows:  # the same score, whether predict or suggest computes it
        assert float(ranked[r["path"]]["unknown_score"]) == pytest.approx(float(r["unknown_score"]), abs=1e-4)
        assert ranked[r["path"]]["unknown"] == ("yes" if r["class"] == "unknown" else "no")
    model_file = next((run / "checkpoints").glob("*.pt"))
    assert main(["predict", str(model_file), str(pool), "--screen", "--device", "cpu"]) == 0


def test_a_second_round_starts_from_the_first_rounds_ema_encoder(run):
    import torch

    from comatch.models import build_model
    from comatch.models.pretrained import load_encoder_weights

    checkpoint = run / "checkpoints" / "last.pt"
    model = build_model("wrn10_1", 2, in_channels=3)
    report = load_encoder_weights(model.encoder, checkpoint)  # model.init=RUN/checkpoints/last.pt
    ema = torch.load(checkpoint, weights_only=False)["ema"]
    ema = {k.removeprefix("module."): v for k, v in ema.items()}
    assert report.loaded and not report.missing
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(value, ema["encoder." + name]), name
