"""What to label next, what does not belong, calibrated confidence, skewed classes, guardrails:
hand-made embeddings and probabilities, and a tiny run for the commands."""

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comatch.cli import main
from comatch.errors import UserError
from comatch.methods import MethodContext
from comatch.methods.comatch import CoMatchSettings, alignment_prior
from comatch.methods.criterion import CoMatchCriterion
from comatch.methods.losses import distribution_alignment
from comatch.methods.memory import DistributionAligner
from comatch.tools.inference.calibration import (
    balanced_accuracy,
    expected_calibration_error,
    fit_temperature,
    macro_f1,
    reliability_bins,
)
from comatch.tools.trust.scores import auroc, diverse_ranking, knn_similarity, ood_scores, smoothed_pool_labels, uncertainty
from comatch.training import guardrails
from comatch.training.stats import StepStats

TINY = ["--iterations", "4", "run.eval_every=2", "run.log_every=2", "data.num_workers=0",
        "optim.batch_size=4", "optim.mu=2", "run.threads=1"]


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


# ------------------------------------------------------------------ what to label next
def test_ranking_prefers_uncertain_and_diverse_over_near_duplicates():
    # three near-duplicates (very uncertain), one distinct uncertain point, one distinct certain point
    z = unit([1, 0, 0], [1, 0.01, 0], [1, 0, 0.01], [0, 1, 0], [0, 0, 1])
    u = torch.tensor([0.9, 0.9, 0.9, 0.7, 0.05])
    labelled = unit([-1, 0, 0])
    ranking = diverse_ranking(z, u, 2, labelled)
    assert ranking.order[0].item() in (0, 1, 2)  # the most uncertain region first
    assert ranking.order[1].item() == 3  # then the other uncertain point, not a near-duplicate
    # the gain of the first pick, by hand: d = (1 - cos(z, labelled)) / 2 = 1, weight 0.05 + 0.9
    assert ranking.score[0].item() == pytest.approx(0.95 * 1.0, abs=1e-3)
    # all five: the duplicates come last, after the certain but distinct point
    order = diverse_ranking(z, u, 5, labelled).order.tolist()
    assert order.index(4) < max(order.index(1), order.index(2))


def test_ranking_without_uncertainty_is_k_centre_coverage():
    z = unit([1, 0], [0.99, 0.14], [0, 1], [-1, 0])
    order = diverse_ranking(z, torch.ones(4), 3).order.tolist()
    assert set(order) == {0, 2, 3} or set(order) == {1, 2, 3}  # never both of the two neighbours


def test_uncertainty_and_smoothed_labels_by_hand():
    q = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    assert uncertainty(q).tolist() == pytest.approx([0.0, 1.0, 0.75])
    # one pool image, one labelled neighbour of class 1: q = alpha p + (1 - alpha) onehot
    p = torch.tensor([[0.6, 0.4]])
    q = smoothed_pool_labels(p, unit([1, 0]), unit([1, 0]), torch.tensor([1]), alpha=0.9, temperature=0.2)
    assert q[0].tolist() == pytest.approx([0.54, 0.46])
    # an image is never its own neighbour: two pool images, no labelled image
    p2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q2 = smoothed_pool_labels(p2, unit([1, 0], [1, 0]), unit([0, 1]), torch.tensor([0]), alpha=0.5, temperature=1.0)
    a = math.exp(1) / (math.exp(1) + math.exp(0))  # the other pool image vs the orthogonal labelled one
    assert q2[0].tolist() == pytest.approx([0.5 + 0.5 * (1 - a), 0.5 * a], abs=1e-6)


# ------------------------------------------------------------------ what does not belong
def test_an_obvious_outlier_scores_highest():
    labelled = unit([1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.1, 0.9, 0])
    pool = unit([1, 0.05, 0], [0.05, 1, 0], [0.95, 0, 0.05], [0, 0, 1])  # the last one is far from everything
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.8, 0.2], [0.55, 0.45]])
    scores = ood_scores(pool, probs, labelled, k=2)
    assert scores.argmax().item() == 3
    # by hand: sim = mean of the 2 best cosines = 0.1 / sqrt(1.01) ... for the outlier the best are 0 and 0
    assert scores[3].item() == pytest.approx(0.5 * 0.5 + 0.5 * 0.45)
    assert auroc(scores, torch.tensor([False, False, False, True])) == 1.0


def test_knn_similarity_and_auroc_by_hand():
    ref = unit([1, 0], [0, 1])
    assert knn_similarity(unit([1, 0]), ref, k=2).tolist() == pytest.approx([0.5])
    assert knn_similarity(unit([1, 0]), ref, k=9).tolist() == pytest.approx([0.5])  # k capped at R
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    assert auroc(scores, torch.tensor([False, True, False, True])) == 1.0
    assert auroc(torch.tensor([0.2, 0.5, 0.5, 0.9]), torch.tensor([False, True, False, True])) == pytest.approx(0.875)
    with pytest.raises(ValueError, match="at least one positive"):
        auroc(scores, torch.zeros(4, dtype=torch.bool))


# ------------------------------------------------------------------ calibration
def test_ece_by_hand():
    probs = torch.tensor([[0.9, 0.1]] * 10)
    labels = torch.tensor([0] * 6 + [1] * 4)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.3)
    table = reliability_bins(probs, labels)
    assert table["share"][13] == 1.0 and table["accuracy"][13] == pytest.approx(0.6)  # 0.9 in (13/15, 14/15]


def test_a_miscalibrated_model_gets_its_temperature_and_its_ece_drops():
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(4000, 5, generator=generator) * 1.5
    labels = torch.multinomial(torch.softmax(base, 1), 1, generator=generator).squeeze(1)  # calibrated at T=1
    overconfident = base * 4  # the toy model's logits: 4x too sharp
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(4.0, rel=0.1)
    before = expected_calibration_error(torch.softmax(overconfident, 1), labels)
    after = expected_calibration_error(torch.softmax(overconfident / t, 1), labels)
    assert before > 0.15 and after < 0.03


def test_balanced_accuracy_and_macro_f1_by_hand():
    confusion = [[8, 2], [1, 1]]  # rows: true class
    assert balanced_accuracy(confusion) == pytest.approx((0.8 + 0.5) / 2)
    f1_0 = 2 * 8 / (2 * 8 + 1 + 2)
    f1_1 = 2 * 1 / (2 * 1 + 2 + 1)
    assert macro_f1(confusion) == pytest.approx((f1_0 + f1_1) / 2)


# ------------------------------------------------------------------ the class prior
def test_the_prior_changes_aligned_probabilities_as_the_equation_says():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    p_avg = torch.tensor([0.4, 0.2, 0.4])
    prior = torch.tensor([0.6, 0.3, 0.1])
    expected = p * prior / p_avg
    expected = expected / expected.sum(1, keepdim=True)
    assert torch.allclose(distribution_alignment(p, p_avg, prior), expected)
    # no prior is the paper's alignment bit for bit; a uniform prior the same up to rounding
    paper = p / p_avg
    assert torch.equal(distribution_alignment(p, p_avg), paper / paper.sum(1, keepdim=True))
    assert torch.allclose(distribution_alignment(p, p_avg, torch.full((3,), 1 / 3)), distribution_alignment(p, p_avg))
    # the aligner with a prior: its first step is aligned with its own batch mean
    aligner = DistributionAligner(3, window=4, prior=torch.tensor([6.0, 3.0, 1.0]))  # renormalised
    aligned, _ = aligner.align(p)
    mean = p.mean(0)
    by_hand = p * prior / mean
    assert torch.allclose(aligned, by_hand / by_hand.sum(1, keepdim=True))
    # and the criterion hands it to its aligner
    criterion = CoMatchCriterion(3, 4, 8, prior=prior)
    assert torch.allclose(criterion.aligner.prior, prior)


def test_da_prior_setting():
    context = MethodContext(3, 4, labelled_counts=(30, 6, 3))
    assert alignment_prior(CoMatchSettings(), context) is None
    labelled = alignment_prior(CoMatchSettings(da_prior="labelled"), context)
    assert labelled.tolist() == pytest.approx([30 / 39, 6 / 39, 3 / 39])
    assert alignment_prior(CoMatchSettings(da_prior=[2, 1, 1]), context).tolist() == pytest.approx([0.5, 0.25, 0.25])
    with pytest.raises(UserError, match="2 values but there are 3 classes"):
        alignment_prior(CoMatchSettings(da_prior=[1, 1]), context)
    with pytest.raises(UserError, match="class 2 has no labelled image"):
        alignment_prior(CoMatchSettings(da_prior="labelled"), MethodContext(3, 4, labelled_counts=(3, 3, 0)))


def test_stats_count_pseudo_labels_per_class():
    from comatch.methods import MethodOutput

    stats = StepStats(torch.device("cpu"), num_classes=3)
    zero = torch.zeros(())
    for labels in ([0, 0, 1, 2], [0, 0, 0, 0]):
        pseudo = F.one_hot(torch.tensor(labels), 3).float()
        stats.add(MethodOutput(zero, zero, zero, zero, {}, pseudo, torch.ones(4, dtype=torch.bool)), None)
    read = stats.read()
    assert [read[f"pseudo_label_share_{c}"] for c in range(3)] == pytest.approx([6 / 8, 1 / 8, 1 / 8])


# ------------------------------------------------------------------ guardrails
def train(step, mask, shares=None):
    record = {"step": step, "kind": "train", "mask_rate": mask}
    for c, s in enumerate(shares or [0.1] * 10):
        record[f"pseudo_label_share_{c}"] = s
    return record


HEALTHY = [train(s, m) for s, m in ((50, 0.0), (100, 0.2), (150, 0.5), (200, 0.7))]


def test_guardrails_stay_quiet_on_a_healthy_run():
    summary = {"iterations": 200, "test_accuracy_ema": 0.9}
    baseline = {"features": {"logistic_regression": 0.7, "knn_1": 0.6, "dim": 64}, "pixels": {"knn_1": 0.85}}
    assert guardrails.check(HEALTHY, total_steps=200, summary=summary, baseline=baseline) == []


def test_mask_rate_guardrail_fires_with_the_numbers():
    stuck = [train(s, m) for s, m in ((50, 0.0), (100, 0.01), (150, 0.004), (200, 0.0))]
    warning = guardrails.mask_rate_near_zero(stuck, total_steps=200)
    assert warning.kind == "mask_rate" and warning.step == 200
    assert "below 2% (at most 1.00%) from step 100 to 200" in warning.message
    assert guardrails.mask_rate_near_zero(stuck[:2], total_steps=2000) is None  # too early to tell


def test_pile_up_guardrail_fires_with_the_numbers():
    piled = [0.82, 0.1, 0.02, 0.01, 0.01, 0.01, 0.01, 0.01, 0.005, 0.005]
    history = HEALTHY + [train(250, 0.8, piled), train(300, 0.8, piled)]
    warning = guardrails.pseudo_labels_pile_up(history)
    assert warning.kind == "pile_up" and "largest: 0 82%, 1 10%" in warning.message
    assert f"{guardrails.effective_classes(piled):.1f} effective classes of 10.0" in warning.message
    # a skewed prior expects it: quiet
    assert guardrails.pseudo_labels_pile_up(history, prior=piled) is None
    # one bad record is not yet a trend
    assert guardrails.pseudo_labels_pile_up(HEALTHY + [train(250, 0.8, piled)]) is None


def test_baseline_guardrail_fires_with_the_numbers():
    baseline = {"features": {"logistic_regression": 0.7}, "pixels": {"knn_1": 0.85}, "supervised": {"test_accuracy": 0.8}}
    warning = guardrails.below_baseline(0.75, baseline, step=200)
    assert "ended at 75.00%" in warning.message and "pixels.knn_1 baseline (85.00%" in warning.message
    assert guardrails.below_baseline(0.848, baseline) is None  # within the margin
    assert guardrails.below_baseline(0.5, None) is None  # no baseline.json: nothing to compare


# ------------------------------------------------------------------ the commands on a tiny run
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trust") / "run"
    assert main(["train", "--out", str(out), *TINY, "data.exclude_outliers=0.1"]) == 0
    return out


def test_a_run_calibrates_leaves_out_outliers_and_checks_itself(run):
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["fitted_on"] == "validation part" and calibration["images"] == 200
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-9  # T minimises the NLL (not the ECE)
    outliers = json.loads((run / "outliers.json").read_text())
    labelled = set(json.loads((run / "labelled.json").read_text()))
    data = json.loads((run / "data.json").read_text())
    candidates = data["unlabelled"] + len(outliers["rows"]) - len(labelled)
    assert len(outliers["rows"]) == round(0.1 * candidates) and not labelled & set(outliers["rows"])
    assert isinstance(json.loads((run / "guardrails.json").read_text()), list)
    assert (run / "plots" / "reliability.png").is_file() and (run / "plots" / "outliers.png").is_file()
    assert "Suspicious unlabelled images" in (run / "report.html").read_text()


def test_temperature_reaches_predict_and_export(run, tmp_path, capsys):
    from comatch.tools.inference.checkpoint import load_model

    calibration = json.loads((run / "calibration.json").read_text())
    calibration["temperature"] = 2.5
    (run / "calibration.json").write_text(json.dumps(calibration))
    out = tmp_path / "model.pt"
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    info = json.loads((tmp_path / "model.pt.json").read_text())
    assert info["calibration"] == {"temperature": 2.5, "calibrated": True}
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    loaded = load_model(run, "ema", "cpu")
    with torch.no_grad():
        logits, _ = loaded.model(loaded.preprocess()(images))
    exported = torch.jit.load(str(out))(images)
    assert torch.allclose(exported, torch.softmax(logits / 2.5, 1), atol=1e-5)
    assert load_model(run, "raw", "cpu").temperature == 1.0  # fitted for the EMA weights only


def test_predict_unknown_threshold(run, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), str(folder), "--out", str(out), "--unknown-threshold", "1.0", "--device", "cpu"]) == 0
    assert {r["class"] for r in csv.DictReader(out.open())} == {"unknown"}
    assert main(["predict", str(run), str(folder), "--unknown-threshold", "1.5"]) == 2
    assert "--unknown-threshold must lie in (0, 1]" in capsys.readouterr().err


def test_suggest_writes_distinct_unlabelled_images(run, tmp_path, capsys):
    out, links, nxt = tmp_path / "s.csv", tmp_path / "links", tmp_path / "next.json"
    assert main(["suggest", str(run), "--n", "6", "--out", str(out), "--links", str(links),
                 "--next-list", str(nxt), "--device", "cpu"]) == 0
    rows = list(csv.DictReader(out.open()))
    labelled = json.loads((run / "labelled.json").read_text())
    indices = [int(r["index"]) for r in rows]
    assert len(set(indices)) == 6 and not set(indices) & set(labelled)
    assert [int(r["rank"]) for r in rows] == list(range(1, 7))
    assert len(list(links.rglob("*.png"))) == 6
    assert json.loads(nxt.read_text()) == labelled + indices
    assert main(["suggest", str(run), "--n", "3", "--before-training", "--out", str(out), "--device", "cpu"]) == 0
    assert len(list(csv.DictReader(out.open()))) == 3
    capsys.readouterr()
    assert main(["suggest", str(tmp_path), "--n", "3"]) == 2
    assert "holds no checkpoint; train the run first" in capsys.readouterr().err
    assert main(["suggest", str(tmp_path), "--n", "3", "--before-training"]) == 2
    assert "has no config.yaml" in capsys.readouterr().err


def test_evaluate_reports_balanced_metrics_and_calibration(run, capsys):
    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy(result["confusion_matrix"]))
    assert 0 <= result["macro_f1"] <= 1 and "ece_calibrated" in result


def test_a_resume_leaves_out_the_same_images(run):
    from torch.utils.data import Subset

    from comatch import config as cfg
    from comatch.data.preprocessing import run_data
    from comatch.tools.trust.ood import exclude_outliers

    config = cfg.build_config(config_file=run / "config.yaml")
    data = run_data(config)
    size = len(data.unlabelled)
    kept = exclude_outliers(config, data, None, None, None, run, write=False, say=lambda _: None)  # no scoring
    rows = json.loads((run / "outliers.json").read_text())["rows"]
    assert isinstance(kept.unlabelled, Subset) and len(kept.unlabelled) == size - len(rows)
    assert not set(kept.unlabelled.indices) & set(rows)


def test_in_run_guardrails_see_the_same_as_the_whole_history():
    from comatch.training import guardrails
    from comatch.training.guardrails import recent_training

    records = []
    for step in range(1, 101):
        records.append({"step": step, "kind": "train", "mask_rate": 0.001,
                        "pseudo_label_share_0": 0.98, "pseudo_label_share_1": 0.01, "pseudo_label_share_2": 0.01})
        records += [{"step": step, "kind": "eval", "test_acc": 0.3}] * 3
    tail = recent_training(records)
    assert [r["step"] for r in tail] == list(range(93, 101)) and all(r["kind"] == "train" for r in tail)
    whole = {w.kind for w in guardrails.check(records, total_steps=100)}
    assert whole == {w.kind for w in guardrails.check(tail, total_steps=100)} == {"mask_rate", "pile_up"}
