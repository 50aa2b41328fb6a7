"""report, evaluate, predict and export on the checkpoint of one tiny CPU run."""

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comatch.cli import main
from comatch.data.digits import load_digits_split
from comatch.tools.inference.checkpoint import load_model
from comatch.tools.report.plots import embedding_2d
from comatch.tools.report.build import write_comparison, write_report

TINY = ["--iterations", "4", "run.eval_every=2", "run.log_every=2", "data.num_workers=0",
        "optim.batch_size=4", "optim.mu=2"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ("accuracy", "losses", "pseudo_labels", "confusion", "embedding")
TRUST_FIGURES = ("pseudo_label_classes", "reliability", "outliers")  # docs/trust.md
ALL_FIGURES = (*FIGURES, "mistakes", "views", *TRUST_FIGURES)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 4-step run (its end-of-run report included)."""
    out = tmp_path_factory.mktemp("tools") / "run"
    assert main(["train", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def digits_test():
    split = load_digits_split(10)
    return split.test_images, split.test_labels


def records(run, kind):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def summary(run):
    return json.loads((run / "summary.json").read_text())


def reference_probs(run, images, weights="ema"):
    """Calibrated probabilities (the run's fitted temperature) of the checkpoint's model on
    uint8 images, through the trainer's preprocessing."""
    loaded = load_model(run, weights, "cpu")
    assert loaded.temperature == json.loads((run / "calibration.json").read_text())["temperature"]
    with torch.no_grad():
        logits, _ = loaded.model(loaded.preprocess()(images))
    return torch.softmax(logits / loaded.temperature, dim=1)


def assert_png(path, min_side=200):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    with Image.open(path) as image:
        assert min(image.size) >= min_side, (path, image.size)


# ----------------------------------------------------------------------------- report
def test_end_of_run_report_has_every_plot_and_the_page(run):
    for name in FIGURES:
        assert_png(run / "plots" / f"{name}.png")
    page = (run / "report.html").read_text()
    assert 'src="plots/' not in page and page.count('src="data:image/png;base64,') == len(ALL_FIGURES)  # self-contained
    ema = summary(run)["test_accuracy_ema"]
    assert f"EMA test accuracy {ema:.2%} on the digits test split (540 images)" in page  # the headline
    from comatch.version import package_version

    assert "40 labelled / " in page and f"comatch {package_version()}</p>" in page
    assert page.index("EMA test accuracy") < page.index("<h2>Classes</h2>") < page.index("<h2>Curves and maps</h2>")
    assert "stopped" not in page.split("<h2>")[0] and "test_accuracy_ema" not in page  # no raw summary keys
    assert "graph_threshold" in page  # config.yaml, at the end


def test_the_report_names_every_class_with_precision_recall_and_f1(run):
    from sklearn.metrics import precision_recall_fscore_support

    page = (run / "report.html").read_text()
    table = page[page.index("<h2>Classes</h2>"):page.index("<h2>Most confident mistakes</h2>")]
    evaluation = write_report(run, out=run / "again", device="cpu").evaluation
    true, predicted = [], []
    for t, row in enumerate(evaluation["confusion_matrix"]):
        for p, n in enumerate(row):
            true += [t] * n
            predicted += [p] * n
    precision, recall, f1, support = precision_recall_fscore_support(true, predicted, labels=range(10), zero_division=0)
    for c in range(10):  # digits' classes are named "0" to "9"; a class never predicted has no precision
        shown = f"{precision[c]:.3f}" if c in predicted else "&ndash;"
        assert (f"<tr><th>{c}</th><td class='n'>{shown}</td><td class='n'>{recall[c]:.3f}</td>"
                f"<td class='n'>{f1[c]:.3f}</td><td class='n'>{support[c]}</td></tr>") in table


def test_confident_mistakes_come_most_confident_first():
    from comatch.tools.report.build import confident_mistakes

    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.99, 0.01]])
    labels = torch.tensor([1, 1, 1, 0, 0])  # rows 0, 2 and 3 are wrong
    assert confident_mistakes(probs, labels, 5) == [0, 3, 2]
    assert confident_mistakes(probs, labels, 2) == [0, 3]


def test_report_plots_the_metrics_series(run, tmp_path):
    report = write_report(run, out=tmp_path, device="cpu")
    evals, trains = records(run, "eval"), records(run, "train")
    steps = [r["step"] for r in evals]
    acc = report.panels["accuracy"][0].lines
    assert acc["raw model"] == (steps, [r["test_acc"] for r in evals])
    assert acc["EMA model"] == (steps, [r["test_acc_ema"] for r in evals])
    losses = report.panels["losses"][0].lines
    names = {"loss_x": "L_x (labelled)", "loss_u": "L_u (pseudo-label)", "loss_c": "L_c (graph contrastive)"}
    for key, label in names.items():
        assert losses[label] == ([r["step"] for r in trains], [r[key] for r in trains])
    mask, graph = report.panels["pseudo_labels"]
    assert mask.lines["mask rate (max q >= tau)"][1] == [r["mask_rate"] for r in trains]
    assert mask.lines["pseudo-label accuracy"][1] == [r["pseudo_label_acc"] for r in trains]
    assert graph.lines["graph edges (W^q > 0)"][1] == [r["graph_edges"] for r in trains]
    saved = json.loads((tmp_path / "plots" / "series.json").read_text())
    assert saved["accuracy"]["Test accuracy"]["EMA model"]["value"] == acc["EMA model"][1]
    # the confusion matrix is the trainer's own final evaluation of the EMA model
    assert report.evaluation["top1"] == pytest.approx(summary(run)["test_accuracy_ema"], abs=1e-6)
    assert sum(map(sum, report.evaluation["confusion_matrix"])) == 540
    assert set(report.figures) == set(ALL_FIGURES)


def test_report_command_compares_runs(run, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("summary.json", "config.yaml"):
        shutil.copy(run / name, other / name)
    halved = [dict(r, test_acc_ema=r["test_acc_ema"] / 2) for r in records(run, "eval")]
    shifted = halved + records(run, "train")
    (other / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in shifted))
    assert main(["report", str(other), str(run)]) == 0
    assert "report:" in capsys.readouterr().out
    for name in ("accuracy", "losses", "pseudo_labels"):
        assert_png(other / "compare" / "plots" / f"{name}.png")
    report = write_comparison([run, other], tmp_path / "cmp")
    ema = report.panels["accuracy"][0].lines
    assert set(ema) == {"run", "other"}
    assert ema["other"][1] == pytest.approx([v / 2 for v in ema["run"][1]])
    assert "other" in (tmp_path / "cmp" / "report.html").read_text()


def test_embedding_map_tsne_and_subsampling():
    z = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    points, rows = embedding_2d(z, "tsne", max_points=30)
    assert points.shape == (30, 2) and len(set(rows.tolist())) == 30 and rows.max() < 50
    points, rows = embedding_2d(z, "pca")
    assert points.shape == (50, 2) and rows.tolist() == list(range(50))
    centred = z - z.mean(0)
    assert np.var(points[:, 0]) == pytest.approx(np.linalg.svd(centred, compute_uv=False)[0] ** 2 / 50, rel=1e-4)  # np.var: ddof 0


# ----------------------------------------------------------------------------- evaluate
def evaluate_json(capsys, *args):
    assert main(["evaluate", *map(str, args), "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out)


def test_evaluate_agrees_with_the_trainer(run, capsys):
    result = evaluate_json(capsys, run)
    for key in ("checkpoint", "step", "weights", "class_names", "num_images", "top1", "top5",
                "per_class_accuracy", "confusion_matrix"):
        assert key in result, key
    assert result["weights"] == "ema" and result["step"] == 4 and result["num_images"] == 540
    assert result["top1"] == pytest.approx(summary(run)["test_accuracy_ema"], abs=1e-6)
    confusion = np.array(result["confusion_matrix"])
    assert confusion.shape == (10, 10) and confusion.sum() == 540
    assert np.trace(confusion) / 540 == pytest.approx(result["top1"], abs=1e-6)
    per_class = [result["per_class_accuracy"][str(c)] for c in range(10)]
    assert per_class == pytest.approx(list(np.diag(confusion) / confusion.sum(1)), abs=1e-6)
    assert 1.0 >= result["top5"] >= result["top1"]
    raw = evaluate_json(capsys, run / "checkpoints" / "last.pt", "--raw")
    assert raw["weights"] == "raw" and raw["top1"] == pytest.approx(summary(run)["test_accuracy"], abs=1e-6)


def test_evaluate_a_labelled_folder(run, capsys, tmp_path, digits_test):
    images, labels = digits_test
    chosen = list(range(40))
    for i in chosen:
        folder = tmp_path / "test" / str(int(labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i, 0].numpy()).save(folder / f"{i}.png")
    result = evaluate_json(capsys, run, "--test", tmp_path / "test")
    predicted = reference_probs(run, images[chosen]).argmax(1)
    assert result["num_images"] == 40
    assert result["top1"] == pytest.approx((predicted == labels[chosen]).float().mean().item(), abs=1e-6)


def test_evaluate_dash_o_writes_the_json_it_would_print(run, capsys, tmp_path):
    printed = evaluate_json(capsys, run)
    assert main(["evaluate", str(run), "--device", "cpu", "-o", str(tmp_path / "e" / "evaluation.json")]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads((tmp_path / "e" / "evaluation.json").read_text()) == printed


# ----------------------------------------------------------------------------- predict
def test_predict_writes_one_row_per_image(run, tmp_path, capsys, digits_test):
    images, _ = digits_test
    nested = tmp_path / "images" / "nested"
    nested.mkdir(parents=True)
    for i in range(5):
        Image.fromarray(images[i, 0].numpy()).save(nested / f"{i}.png")
    Image.fromarray(images[5, 0].numpy()).convert("RGB").resize((24, 24)).save(tmp_path / "images" / "rgb.JPG")
    (tmp_path / "images" / "broken.png").write_text("not an image")
    (tmp_path / "images" / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run), str(tmp_path / "images"), "--out", str(out), "--top-k", "3", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "predicted 6 image(s); 1 could not be read" in err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 7
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert by_name["broken.png"]["error"] and not by_name["broken.png"]["class"]
    expected = reference_probs(run, images[:5])
    for i in range(5):
        row = by_name[f"{i}.png"]
        assert row["error"] == "" and row["class"] == str(int(expected[i].argmax()))
        probs = [float(row[k]) for k in ("probability", "probability_2", "probability_3")]
        assert probs == sorted(probs, reverse=True)
        assert probs[0] == pytest.approx(expected[i].max().item(), abs=1e-5)
    assert by_name["rgb.JPG"]["class"] in [str(c) for c in range(10)]


# ----------------------------------------------------------------------------- export
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_pytorch(run, tmp_path, capsys, digits_test, fmt):
    images, _ = digits_test
    out = tmp_path / ("model.pt" if fmt == "torchscript" else "model.onnx")
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
    assert "exported" in capsys.readouterr().out
    info = json.loads((tmp_path / f"{out.name}.json").read_text())
    assert info["class_names"] == [str(c) for c in range(10)]
    assert info["input"]["dtype"] == "uint8" and info["input"]["shape"] == ["N", 1, 8, 8]
    assert len(info["preprocessing"]["mean"]) == 1 and len(info["preprocessing"]["std"]) == 1
    batch = images[:37]
    if fmt == "torchscript":
        exported = torch.jit.load(str(out))(batch).detach().numpy()
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        exported = session.run(None, {"images": batch.numpy()})[0]
    np.testing.assert_allclose(exported, reference_probs(run, batch).numpy(), atol=1e-5)


def test_onnx_export_without_onnxruntime_says_what_to_install(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install 'comatch[export]'" in err
    assert not (tmp_path / "m.onnx").exists()


# ----------------------------------------------------------------------------- bad input
def mismatched_checkpoint(run, path):
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    state["config"]["model"]["proj_dim"] = 32  # the saved weights have a 64-d projection head
    torch.save(state, path)


@pytest.mark.parametrize("command", [["evaluate"], ["predict", "PLACEHOLDER"], ["export", "--format", "torchscript"]])
@pytest.mark.parametrize("case, message", [("missing", "does not exist"), ("text", "not a checkpoint"),
                                           ("mismatch", "do not match the model its config describes")])
def test_bad_checkpoint_is_one_line_and_exit_2(run, tmp_path, capsys, command, case, message):
    path = tmp_path / "model.pt"
    if case == "text":
        path.write_text("hello")
    elif case == "mismatch":
        mismatched_checkpoint(run, path)
    image = tmp_path / "x.png"
    Image.new("L", (8, 8)).save(image)
    args = [str(image) if a == "PLACEHOLDER" else a for a in command]
    assert main([args[0], str(path), *args[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("comatch: error:") and message in err and "\n" not in err


def test_the_using_the_model_page_runs_on_an_exported_model(run, tmp_path, capsys, digits_test):
    """docs/using-the-model.md's snippets, run as written on this run's exports: ONNX Runtime
    and TorchScript give the probabilities of the checkpoint's own model."""
    import re

    images, _ = digits_test
    files = []
    for i in range(5):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(images[i, 0].numpy()).save(files[-1])
    for fmt in ("onnx", "torchscript"):
        assert main(["export", str(run), "--format", fmt]) == 0
    page = (Path(__file__).resolve().parents[1] / "docs" / "using-the-model.md").read_text()
    code = "\n".join(re.findall(r"^```python\n(.*?)^```", page, flags=re.S | re.M))
    code = code.replace("runs/digits-comatch-seed0", str(run))
    code = re.sub(r"^files = \[.*\]$", f"files = {files!r}", code, flags=re.M)
    namespace: dict = {"__name__": "__docs__"}
    exec(compile(code, "docs/using-the-model.md", "exec"), namespace)
    expected = reference_probs(run, images[:5]).numpy()
    onnx_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(str(tmp_path))]
    assert len(onnx_lines) == 5
    for line, row in zip(onnx_lines, expected):
        assert line.split()[1] == str(row.argmax()) and float(line.split()[2]) == pytest.approx(row.max(), abs=1e-3)
    assert namespace["probabilities"] == pytest.approx(expected, abs=1e-4)  # the TorchScript block ran last
    assert namespace["predicted"] == [str(i) for i in expected.argmax(1)]


def test_the_reports_settings_state_a_ramped_threshold():
    from comatch.config import build_config
    from comatch.tools.report.build import settings_as_run

    plain = settings_as_run(build_config(), {}, {})
    assert plain["confidence threshold (tau)"] == 0.95
    ramped = settings_as_run(build_config(overrides=["comatch.threshold_start=0.8", "comatch.threshold_ramp=0.5"]), {}, {})
    assert ramped["confidence threshold (tau)"] == "0.8 at the first step, 0.95 from 50% of the run on (linear)"
