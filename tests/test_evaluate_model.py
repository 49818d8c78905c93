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

    logits, labels, classes, examples, _ = predict_split(model_dir, frames_dir, examples=5)
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
    averaged, *_ = predict_split(model_dir, tmp_path)
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
    assert dom.count('<img alt="') == 4 and dom.count("<h2>") == 8
    shot = tmp_path / "report.png"
    subprocess.run([*browser, "--window-size=1000,3000", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (3000, 1000) and (pixels[..., :3] < 0.5).mean() > 0.01


def test_reordered_frames_are_reversed_or_shuffled_with_no_frame_in_place():
    from components.evaluate_model.evaluate import reorder_frames

    frames = 8
    clips = np.broadcast_to(np.arange(frames)[None, :, None, None, None], (20, frames, 2, 2, 3)).copy()
    reversed_ = reorder_frames(clips, "reversed", np.random.default_rng(0))
    assert (reversed_[:, :, 0, 0, 0] == np.arange(frames)[::-1]).all()
    shuffled = reorder_frames(clips, "shuffled", np.random.default_rng(0))[:, :, 0, 0, 0]
    assert (np.sort(shuffled, axis=1) == np.arange(frames)).all()  # the same frames, each once
    assert (shuffled != np.arange(frames)).all()  # none left in its place
    assert len({tuple(order) for order in shuffled}) > 10  # a new order for each clip
    assert (clips[:, :, 0, 0, 0] == np.arange(frames)).all()  # the clips given are left as they were


def test_frame_order_scores_from_known_logits():
    from components.evaluate_model.evaluate import frame_order_scores

    labels = np.array([0] * 10 + [1] * 10)
    stored = np.eye(2)[labels]
    stored[[5, 15]] = stored[[5, 15], ::-1]  # two answers wrong: accuracy 0.9
    one_changed = stored.copy()
    one_changed[0] = [0, 1]  # reversing changes one answer of 20 (a right one): 95 % agreement
    three_changed = one_changed.copy()
    three_changed[[5, 15]] = three_changed[[5, 15], ::-1]  # shuffling also changes the two wrong ones
    scores = frame_order_scores(stored, labels, {"reversed": one_changed, "shuffled": three_changed})
    assert scores["reversed"] == {"accuracy": 0.85, "agreement": 0.95}
    assert scores["shuffled"] == {"accuracy": 0.95, "agreement": 0.85}
    assert not scores["ignores_motion"]  # shuffling changed too many answers
    blind = frame_order_scores(stored, labels, {"reversed": one_changed, "shuffled": one_changed})
    assert blind["ignores_motion"]  # 95 % agreement both ways: the answers do not depend on order
    reads = frame_order_scores(stored, labels, {"reversed": stored[:, ::-1], "shuffled": stored})
    assert reads["reversed"] == {"accuracy": 0.1, "agreement": 0.0} and not reads["ignores_motion"]


def model_folder(model, folder, frames_dir):
    """A model folder, as training writes it, around a model built here."""
    from components.train_model.model_folder import (
        CLASSES_FILE,
        HISTORY_FILE,
        MODEL_FILE,
        SELECTION_FILE,
    )

    folder.mkdir()
    model.save(folder / MODEL_FILE)
    classes = json.loads((frames_dir / "manifest.json").read_text())["classes"]
    (folder / CLASSES_FILE).write_text(json.dumps(classes))
    (folder / HISTORY_FILE).write_text(json.dumps({"loss": [1.0], "accuracy": [0.5], "val_loss": [1.0],
                                                   "val_accuracy": [0.5]}))
    (folder / SELECTION_FILE).write_text(json.dumps(
        {"epoch": 1, "epochs_compared": 1, "val_loss": 1.0, "val_accuracy": 0.5, "val_videos": 8,
         "val_clips": 8, "chance_accuracy": 0.25, "p_value": 0.01, "within_chance": False}))
    return folder


@pytest.mark.parametrize("reads", ["the mean over time", "the first frame"])
def test_the_report_says_when_answers_do_not_depend_on_frame_order(frames_dir, tmp_path, reads):
    """A model of the mean frame cannot see frame order; one of the first frame must. Their
    scores on reversed and shuffled clips, against the model run here on clips reordered by hand."""
    import keras

    from components.evaluate_model.evaluate import IGNORES_MOTION, evaluate
    from components.train_model.inputs import batches

    manifest = json.loads((frames_dir / "manifest.json").read_text())
    frames = manifest["frame_shape"][0]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(manifest["frame_shape"], dtype="uint8"), keras.layers.Rescaling(1 / 255),
        keras.layers.AveragePooling3D((frames, 1, 1)) if reads == "the mean over time"
        else keras.layers.Cropping3D(((0, frames - 1), (0, 0), (0, 0))),
        keras.layers.Flatten(), keras.layers.Dense(len(manifest["classes"]))])
    evaluation = evaluate(model_folder(model, tmp_path / "model", frames_dir), frames_dir)

    test = [(x.numpy(), y.numpy()) for x, y in batches(frames_dir, "test", 8)]
    clips, labels = np.concatenate([x for x, _ in test]), np.concatenate([y for _, y in test])
    stored = model.predict(clips, verbose=0).argmax(axis=1)
    backwards = model.predict(clips[:, ::-1], verbose=0).argmax(axis=1)
    metrics = evaluation.metrics
    assert metrics["test_accuracy"] == pytest.approx((stored == labels).mean())
    assert metrics["reversed_accuracy"] == pytest.approx((backwards == labels).mean())
    assert metrics["reversed_agreement"] == pytest.approx((backwards == stored).mean())
    said = [f"{IGNORES_MOTION} (" in text for text in (evaluation.summary, evaluation.report)]
    if reads == "the mean over time":
        assert metrics["reversed_agreement"] == metrics["shuffled_agreement"] == 1.0
        assert metrics["ignores_motion"] == 1.0 and said == [True, True]
    else:
        assert metrics["reversed_agreement"] < 0.9 and metrics["shuffled_agreement"] < 0.9
        assert metrics["ignores_motion"] == 0.0 and said == [False, False]
        assert "it uses motion" in evaluation.report
    assert "| frames shuffled |" in evaluation.summary and "frames reversed" in evaluation.report
    assert "validation loss on 8 clips (8 videos, the centred clip of each)" in evaluation.summary
