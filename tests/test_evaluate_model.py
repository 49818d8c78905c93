import numpy as np
import pytest

from components.evaluate_model.evaluate import heatmap_png, predict_split, report_html, score
from components.train_model.train import TrainConfig, train

CLASSES = ["A", "B", "C"]


def test_scores_from_known_logits():
    labels = np.array([0, 0, 1, 1, 2, 2])
    logits = np.eye(3)[[0, 1, 1, 1, 1, 1]] * 5.0  # class C is never predicted
    results = score(logits, labels, CLASSES)
    assert results["test_accuracy"] == pytest.approx(3 / 6)
    assert results["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 2, 0]]
    rows = {r["class"]: r for r in results["per_class"]}
    assert rows["A"]["precision"] == 1.0 and rows["A"]["recall"] == 0.5
    assert rows["B"]["precision"] == pytest.approx(2 / 5) and rows["B"]["recall"] == 1.0
    assert rows["C"]["precision"] == 0.0 and rows["C"]["support"] == 2
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert results["test_loss"] == pytest.approx(-log_p[np.arange(6), labels].mean())


def test_report_holds_numbers_table_and_heatmap():
    results = score(np.eye(3)[[0, 1, 2, 2]], np.array([0, 1, 2, 1]), CLASSES)
    heatmap = heatmap_png(results["confusion_matrix"], CLASSES)
    assert heatmap.startswith(b"\x89PNG")
    html = report_html(results, heatmap)
    assert "0.750" in html and "data:image/png;base64," in html
    assert all(f"<td>{c}</td>" in html for c in CLASSES)


def test_evaluating_twice_gives_identical_numbers(frames_dir, tmp_path):
    train(frames_dir, tmp_path, TrainConfig(epochs=1, batch_size=4, seed=0))
    first_logits, labels, classes = predict_split(tmp_path, frames_dir)
    second_logits, _, _ = predict_split(tmp_path, frames_dir)
    assert first_logits.shape == (12, 4) and len(labels) == 12
    assert np.array_equal(first_logits, second_logits)
    assert score(first_logits, labels, classes) == score(second_logits, labels, classes)
