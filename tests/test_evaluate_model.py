import json

import numpy as np
import pytest

from components.evaluate_model.evaluate import (
    frame_strip_png,
    heatmap_png,
    predict_split,
    report_html,
    score,
    summary_markdown,
)

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
    assert results["notes"] == ["C is never predicted: its precision is reported as 0"]
    assert results["macro_precision"] == pytest.approx((1 + 0.4 + 0) / 3)
    assert results["macro_recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert results["weighted_f1"] == pytest.approx(np.mean([rows[c]["f1"] for c in CLASSES]))  # equal support
    assert results["most_confused"] == [{"true": "C", "predicted": "B", "clips": 2},
                                        {"true": "A", "predicted": "B", "clips": 1}]
    assert "test_top5_accuracy" not in results  # fewer than 5 classes
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert results["test_loss"] == pytest.approx(-log_p[np.arange(6), labels].mean())


def test_top5_from_five_classes_up():
    classes = list("ABCDEF")
    labels = np.arange(6)
    logits = np.zeros((6, 6))
    for row, rank in enumerate([1, 2, 5, 6, 3, 1]):  # where the true class ranks in each row
        others = [c for c in range(6) if c != row]
        logits[row, others[:rank - 1] + [row] + others[rank - 1:]] = np.arange(6, 0, -1)
    results = score(logits, labels, classes)
    assert results["test_accuracy"] == pytest.approx(2 / 6)
    assert results["test_top5_accuracy"] == pytest.approx(5 / 6)


def test_report_and_summary_hold_numbers_tables_and_figures():
    results = score(np.eye(3)[[0, 1, 1, 1]], np.array([0, 1, 2, 1]), CLASSES)
    heatmap = heatmap_png(results["confusion_matrix"], CLASSES)
    normalised = heatmap_png(results["confusion_matrix"], CLASSES, normalize=True)
    assert heatmap.startswith(b"\x89PNG") and normalised != heatmap
    clips = np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8)
    strip = frame_strip_png(clips, np.array([0, 2]), np.array([0, 1]), CLASSES)
    html = report_html(results, {"Confusion matrix": heatmap, "Test clips": strip})
    assert "0.750" in html and html.count("data:image/png;base64,") == 2
    assert all(f"<td>{c}</td>" in html for c in CLASSES)
    assert "Note: C is never predicted" in html and "macro_f1" in html
    markdown = summary_markdown(results)
    assert "| test_accuracy | 0.7500 |" in markdown and "| C | 0.000 | 0.000 | 0.000 | 1 |" in markdown
    assert "C -> B (1)" in markdown


def test_each_row_of_the_evaluation_is_its_test_videos_logits_and_label(frames_dir, model_dir):
    """Against an independent reading of the test shards: TensorFlow's record reader and its own
    Example parser, each video's clip reshaped by hand and given to the model."""
    import tensorflow as tf

    from components.train_model.model_folder import load_model

    logits, labels, classes, examples = predict_split(model_dir, frames_dir, examples=5)
    manifest = json.loads((frames_dir / "manifest.json").read_text())
    model, _ = load_model(model_dir)
    expected_logits, expected_labels = [], []
    for group in manifest["shards"]["test"]:
        for record in tf.data.TFRecordDataset([str(frames_dir / group[0])]):
            feature = tf.train.Example.FromString(record.numpy()).features.feature
            clip = np.frombuffer(feature["clip"].bytes_list.value[0], np.uint8)
            clip = clip.reshape(manifest["frame_shape"])
            expected_logits.append(model.predict_on_batch(clip[None])[0])
            expected_labels.append(feature["label"].int64_list.value[0])
    order = [classes.index(v["class"]) for v in manifest["videos"] if v["split"] == "test"]
    assert list(labels) == expected_labels == order
    assert np.allclose(logits, expected_logits, atol=1e-5) and logits.shape == (12, 4)
    # one example clip per class (4 classes), the first of each, as the test split holds it
    assert sorted(labels[list(examples)]) == [0, 1, 2, 3]
    assert all(index == order.index(labels[index]) for index in examples)


def test_a_kept_model_within_noise_of_chance_is_noted_in_the_report():
    from components.evaluate_model.evaluate import selection_note

    selection = {"epoch": 1, "val_accuracy": 0.5, "val_clips": 16, "chance_accuracy": 0.25,
                 "p_value": 0.3, "epochs_compared": 11, "within_chance": True}
    results = score(np.eye(3)[[0, 1, 2]], np.array([0, 1, 2]), CLASSES)
    results["notes"] += selection_note(selection)
    assert "within noise of chance (0.250: p = 0.30 as the best of 11 epochs)" in report_html(results, {})
    assert "within noise of chance" in summary_markdown(results)
    assert selection_note({**selection, "within_chance": False}) == []


def test_evaluation_averages_the_logits_of_evenly_spaced_clips(videos_dir, model_dir, tmp_path):
    from components.extract_frames.config import ClipSpec
    from components.extract_frames.extract import extract_dataset
    from components.train_model.inputs import batches
    from components.train_model.model_folder import load_model

    spec = ClipSpec(n_frames=4, frame_step=2, height=32, width=32, clips_per_train_video=2, seed=0,
                    eval_clips_per_video=3)
    extract_dataset(videos_dir, tmp_path, spec)
    averaged, _, _, _ = predict_split(model_dir, tmp_path)
    model, _ = load_model(model_dir)
    per_slot = [np.concatenate([model.predict_on_batch(c) for c, _ in batches(tmp_path, "test", 8, slot=s)])
                for s in range(3)]
    assert np.allclose(averaged, np.mean(per_slot, axis=0), atol=1e-5)
    assert not np.allclose(per_slot[0], per_slot[2])  # the clips differ


def test_the_report_opens_in_a_browser_as_a_page_with_its_figures(frames_dir, model_dir, tmp_path):
    """The report of a trained model, opened in headless Chromium (which .ci/run installs): parsed
    as HTML with its four figures, and its screenshot is not blank."""
    import shutil
    import subprocess

    import matplotlib.image

    from components.evaluate_model.evaluate import evaluate

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH for the browser check of the report")
    report = tmp_path / "report.html"
    report.write_text(evaluate(model_dir, frames_dir).report)
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*browser, "--dump-dom", report.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert "<pre" not in dom, "the browser showed the report as text"
    assert dom.count('<img alt="') == 4 and dom.count("<h2>") == 7
    shot = tmp_path / "report.png"
    subprocess.run([*browser, "--window-size=1000,3000", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (3000, 1000) and (pixels[..., :3] < 0.5).mean() > 0.01
