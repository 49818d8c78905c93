"""Batch prediction: the videos of whole sources answered by a model folder, one JSON line each.

Sources are those training reads, without the need for labels: video files, folders (every video
below them), zips and annotation lists (a path a line, or a CSV with a ``path`` column; other
columns are ignored), local or in ``gs://`` and ``s3://`` (zips also over ``http(s)://``). A zip's
member is named ``zip://<member>::<zip>``, fsspec's form.

Videos are decoded by a pool of processes, one per core (extraction's), and at most a few
finished videos a process wait to be scored; the model scores them in batches of ``batch_size``
clips. Each video is answered as a test video is sampled (``predict.Predictor``), or with
``segments`` (seconds) as labels over time (``segments.py``). Answers come in the sources' order.

The output is a JSON Lines file, written one whole line at a time and flushed to disk, so that a
run killed at any point leaves every answer it wrote: a later run with the same output skips the
videos it holds and appends the others (a half line left by a kill mid-write is cut off first).
The settings it was written with (the model's SHA-256, ``top_k``, ``segments``) are kept beside
it, and a run with others is refused rather than mixing two kinds of answers. A video that cannot
be read gets a line ``{"video": ..., "error": ...}`` and the run goes on.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import multiprocessing
import os
import signal
import tempfile
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from components.common import atomic_write_bytes, file_sha256, require_at_least_one, write_json
from components.download_subset.sources import (
    LIST_SUFFIXES,
    SourceError,
    folder_files,
    is_video,
    open_zip,
    read_text,
    zip_files,
)
from components.extract_frames.extract import IN_FLIGHT_PER_WORKER, bounded_map, cores, start_worker
from components.serve_model.config import BATCH_SIZE, TOP_K, VIDEOS_PER_SHARD
from components.serve_model.predict import Predictor, eval_clips, sampling_spec
from components.serve_model.segments import CHUNK_BYTES, Timeline, merge, read_windows, timeline
from components.storage import filesystem, is_remote

log = logging.getLogger(__name__)

ZIP_PREFIX = "zip://"
EXAMPLES = 20  # failures listed in a summary
PREDICTIONS_FILE = "predictions.jsonl"
SHARD_FILE = "shard.json"


# Sources -------------------------------------------------------------------------------------


def list_videos(sources: Iterable[str | Path]) -> list[str]:
    """The videos of each source in turn, each once: a video file as given (one that is not
    there is answered with an error), every video below a folder or in a zip in name order, and
    the paths an annotation list names (relative to its folder, unless absolute or URLs)."""
    sources, videos = [str(source) for source in sources], {}
    for source in sources:
        lowered = source.lower().rstrip("/")
        if is_video(lowered):
            found = [source]
        elif lowered.endswith(LIST_SUFFIXES):
            found = listed_paths(source)
        elif lowered.endswith(".zip"):
            files, _, _ = zip_files(source)
            found = [f"{ZIP_PREFIX}{name}::{source}" for name, _, _ in sorted(files) if usable(name)]
        else:
            files, _ = folder_files(source)
            found = [f"{source.rstrip('/')}/{name}" for name, _, _ in sorted(files) if usable(name)]
        if not found:
            raise SourceError(f"{source} holds no video")
        videos.update(dict.fromkeys(found))
    log.info("listed %d videos in %d source(s)", len(videos), len(sources))
    return list(videos)


def usable(name: str) -> bool:
    """A video's file name, and not a hidden file's."""
    return is_video(name) and not name.rsplit("/", 1)[-1].startswith(".")


def listed_paths(url: str) -> list[str]:
    """The paths of an annotation list: a CSV's ``path`` column, or each line (``path``, or
    training's ``path label``)."""
    import csv
    import io

    text = read_text(url)
    if url.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        column = next((c for c in reader.fieldnames or [] if c.strip().lower() == "path"), None)
        if column is None:
            raise SourceError(f"{url} has no path column: its header is {', '.join(reader.fieldnames or [])}")
        paths = [row[column].strip() for row in reader if (row[column] or "").strip()]
    else:
        paths = []
        for line in (line.strip() for line in text.splitlines()):
            if line and not line.startswith("#"):
                head = line.rpartition(" ")[0].strip() or line.rpartition("\t")[0].strip()
                paths.append(line if is_video(line) or not is_video(head) else head)
    base = url.rsplit("/", 1)[0] if "/" in url else "."
    return [p if p.startswith("/") or "://" in p else f"{base}/{p}" for p in paths]


def zip_member(video: str) -> tuple[str, str]:
    """The zip and the member a ``zip://<member>::<zip>`` name stands for."""
    member, _, archive = video[len(ZIP_PREFIX):].partition("::")
    return archive, member


@functools.lru_cache(maxsize=4)
def opened_zip(archive: str):
    """A zip kept open for the videos after this one (a decoding process reads one at a time)."""
    return open_zip(archive)


def fetch(video: str, folder: str) -> Path:
    """A local copy of a remote video or zip member in ``folder``, under its own suffix (which
    tells OpenCV whether to trust the frame count of its header)."""
    zipped = video.startswith(ZIP_PREFIX)
    archive, member = zip_member(video) if zipped else ("", video)
    fd, name = tempfile.mkstemp(dir=folder, suffix=PurePosixPath(member).suffix)
    try:
        if zipped:
            with os.fdopen(fd, "wb") as f:
                f.write(opened_zip(archive).read(member))
        else:
            os.close(fd)
            fs, path = filesystem(video)
            fs.get_file(path, name)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def is_copied(video: str) -> bool:
    """Whether a video is read from a local copy: one in a bucket, or a zip's member."""
    return is_remote(video) or video.startswith(ZIP_PREFIX)


# Decoding, in the pool's processes --------------------------------------------------------------


@dataclass
class Piece:
    """Decoded clips of one video, or why it cannot be read. A video's clips are scored
    together (their logits averaged); a segment run's windows one by one, in pieces of a chunk."""

    video: str
    clips: np.ndarray | None = None
    error: str | None = None
    line: Timeline | None = None  # the windows, in a segment run
    last: bool = True  # the video's last piece
    copy: str | None = None  # a local copy to remove once the video is answered

    @property
    def items(self) -> list[np.ndarray]:
        """The groups of clips scored as one: the video's, or each window's."""
        if self.clips is None:
            return []
        return [clip[None] for clip in self.clips] if self.line else [self.clips]


def unreadable(video: str, path: Path | None, error: Exception) -> str:
    """Why a video cannot be read, naming it (not a local copy of it)."""
    import cv2

    text = str(error)
    if isinstance(error, cv2.error):
        text = f"OpenCV: {text}".strip()
    elif not isinstance(error, ValueError):  # reading a remote file or a zip failed
        text = f"cannot be read: {type(error).__name__}: {text}"
    if path is not None:
        text = text.replace(f"{path}: ", "").replace(str(path), video)
    return f"{video}: {text}"


def decode_video(job: tuple[str, dict, str]) -> Piece:
    """The clips of one video as a test video's."""
    video, sampling, folder = job
    try:
        copy = fetch(video, folder) if is_copied(video) else None
    except Exception as e:  # noqa: BLE001 (a bucket's or a zip's error is that video's, not the run's)
        return Piece(video, error=unreadable(video, None, e))
    path = copy or Path(video)
    try:
        clips, outcome = eval_clips(path, sampling)
    finally:
        if copy:
            copy.unlink()
    if clips is None:
        return Piece(video, error=outcome["error"].replace(str(path), video))
    return Piece(video, clips)


def probe_video(job: tuple[str, dict, float, str]) -> dict:
    """A video's frame count and rate, and so its windows; a remote one copied here first,
    for the reads of its windows."""
    import cv2

    from components.extract_frames.video import Video

    video, sampling, stride, folder = job
    path = None
    try:
        path = fetch(video, folder) if is_copied(video) else Path(video)
        with Video(path) as opened:
            line = timeline(opened.frame_count, opened.fps, sampling_spec(sampling), stride)
    except (ValueError, cv2.error, OSError) as e:
        if path is not None and is_copied(video):
            path.unlink(missing_ok=True)
        return {"video": video, "error": unreadable(video, path, e)}
    except Exception as e:  # noqa: BLE001 (a bucket's client error)
        return {"video": video, "error": unreadable(video, None, e)}
    return {"video": video, "path": str(path), "copy": is_copied(video), "line": line}


def decode_windows(job: tuple[dict, tuple[int, ...], bool, int, int]) -> Piece:
    """One chunk of a video's windows."""
    import cv2

    probe, starts, last, height, width = job
    video = probe["video"]
    if "error" in probe:
        return Piece(video, error=probe["error"])
    path, copy = Path(probe["path"]), probe["path"] if probe["copy"] and last else None
    try:
        clips = read_windows(path, probe["line"], starts, height, width)
    except (ValueError, cv2.error) as e:
        return Piece(video, error=unreadable(video, path, e), line=probe["line"], last=last, copy=copy)
    return Piece(video, clips, line=probe["line"], last=last, copy=copy)


def window_pieces(decode, videos: list[str], sampling: dict, stride: float, folder: str) -> Iterator[Piece]:
    """The windows of each video, in chunks of bounded size, decoded by ``decode`` (a map)."""
    spec = sampling_spec(sampling)
    clip_bytes = spec.n_frames * spec.height * spec.width * 3
    probes = decode(probe_video, ((video, sampling, stride, folder) for video in videos))

    def jobs():
        for probe in probes:
            chunks = probe["line"].chunks(clip_bytes) if "line" in probe else [()]
            for k, starts in enumerate(chunks):
                yield probe, starts, k == len(chunks) - 1, spec.height, spec.width

    return decode(decode_windows, jobs(), max(1, CHUNK_BYTES // clip_bytes))


# Scoring, in this process ---------------------------------------------------------------------


def scored(predictor: Predictor, pieces: Iterable[Piece],
           batch_size: int) -> Iterator[tuple[Piece, np.ndarray]]:
    """Each piece in order with the class probabilities of its items (a row each), the model
    scoring ``batch_size`` clips at once (more only for one item that has more). A batch short
    of clips is filled with black ones, whose scores are dropped: the model then always sees one
    shape, and TensorFlow traces it once."""
    waiting: deque[tuple[Piece, list]] = deque()  # pieces in order, with the rows scored so far
    batch: list[tuple[list, np.ndarray]] = []  # items not yet scored, and where their rows go

    def score() -> None:
        items = [clips for _, clips in batch]
        missing = batch_size - sum(len(clips) for clips in items)
        if missing > 0:
            items.append(np.zeros((missing, *items[0].shape[1:]), items[0].dtype))
        rows = predictor.probabilities(items)
        for (owner, _), row in zip(batch, rows, strict=False):
            owner.append(row)
        batch.clear()

    def finished() -> Iterator[tuple[Piece, np.ndarray]]:
        while waiting and len(waiting[0][1]) == len(waiting[0][0].items):
            piece, rows = waiting.popleft()
            yield piece, np.array(rows)

    for piece in pieces:
        rows: list = []
        waiting.append((piece, rows))
        for clips in piece.items:
            if batch and sum(len(c) for _, c in batch) + len(clips) > batch_size:
                score()
                yield from finished()
            batch.append((rows, clips))
        yield from finished()
    if batch:
        score()
    yield from finished()


def answers(predictor: Predictor, videos: Sequence[str], top_k: int = TOP_K, segments: float = 0.0,
            batch_size: int = BATCH_SIZE, workers: int = 0) -> Iterator[dict]:
    """The answer of each video, in order: ``{"video", "top"}``, with ``segments`` (seconds,
    above 0) ``{"video", "duration", "segments": [{"start", "end", "top"}, ...]}``, or
    ``{"video", "error"}``. ``workers`` decoding processes (0: one per core; 1: in this process)."""
    if segments < 0:
        raise ValueError(f"segments is the stride in seconds of labels over time (0: none), got {segments}")
    if workers < 0:
        raise ValueError(f"workers is a number of decoding processes (0: one per core), got {workers}")
    require_at_least_one({"top_k": top_k, "batch_size": batch_size})
    workers = workers or cores()
    top = functools.partial(predictor.top, k=top_k)
    with (tempfile.TemporaryDirectory(prefix="videoclf-predict-") as folder,
          pool_map(workers, batch_size) as decode):
        if segments:
            pieces = window_pieces(decode, list(videos), predictor.sampling, segments, folder)
        else:
            pieces = decode(decode_video, ((video, predictor.sampling, folder) for video in videos))
        rows, error = [], None
        for piece, probabilities in scored(predictor, pieces, batch_size):
            if not segments:
                yield ({"video": piece.video, "error": piece.error} if piece.error else
                       {"video": piece.video, "top": top(probabilities[0])})
                continue
            error = error or piece.error
            rows.append(probabilities)
            if piece.last:
                if piece.copy:
                    Path(piece.copy).unlink(missing_ok=True)
                yield ({"video": piece.video, "error": error} if error else
                       {"video": piece.video, "duration": round(piece.line.duration, 3),
                        "segments": merge(piece.line, np.concatenate(rows), top)})
                rows, error = [], None


def start_decoder() -> None:
    """Sets up a decoding process as extraction's, leaving Ctrl-C to the main process, which
    stops the pool once the videos being decoded are."""
    start_worker()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def pool_map(workers: int, batch_size: int):
    """A map over decoding jobs, ``decode(function, jobs, clips_per_job=1)``: one process per
    worker, with enough jobs in flight to fill a batch while the model scores the last one, and
    a few a process besides; with one worker, in this process."""
    if workers == 1:
        yield lambda function, jobs, clips_per_job=1: map(function, jobs)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds TF's threads
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=start_decoder)

    def decode(function, jobs: Iterable, clips_per_job: int = 1) -> Iterator:
        window = IN_FLIGHT_PER_WORKER * workers + math.ceil(batch_size / clips_per_job)
        return bounded_map(pool, function, jobs, window)

    try:
        yield decode
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# The output file ------------------------------------------------------------------------------


class JsonLines:
    """A JSON Lines output that a run appends to a whole line at a time, and a later run resumes.

    Opening it reads the lines already there: a last line without its newline (a kill during
    its write) is cut off, and the settings kept beside the file must be this run's. With
    ``retry_failed``, the error lines are removed (the file rewritten atomically), so that their
    videos are tried again.
    """

    def __init__(self, path: Path, settings: dict, retry_failed: bool = False):
        self.path = Path(path)
        self.settings_path = self.path.with_name(self.path.name + ".settings.json")
        self.lines = self._read()
        kept = json.loads(self.settings_path.read_text()) if self.settings_path.is_file() else None
        if self.lines and kept is not None and kept != settings:
            changed = ", ".join(f"{k} {kept.get(k)!r} -> {settings.get(k)!r}" for k in sorted(settings)
                                if kept.get(k) != settings.get(k))
            raise ValueError(f"{self.path} holds answers given with other settings ({changed}): write to "
                             "another file, or remove it to start again")
        write_json(self.settings_path, settings)
        self.retried = self._drop_failed() if retry_failed else 0
        self._file = None

    def _read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        whole = data.rfind(b"\n") + 1
        if whole < len(data):
            log.warning("%s: cut off a half-written last line (%d bytes) left by an interrupted run",
                        self.path, len(data) - whole)
            with open(self.path, "r+b") as f:
                f.truncate(whole)
                os.fsync(f.fileno())
        lines = []
        for number, line in enumerate(data[:whole].decode().splitlines(), 1):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.path}, line {number}: not a JSON line ({e}): is it a predictions "
                                 "file?") from e
        return lines

    @property
    def done(self) -> set[str]:
        """The videos that have a line."""
        return {line["video"] for line in self.lines}

    def _drop_failed(self) -> int:
        """Removes the error lines; how many there were."""
        kept = [line for line in self.lines if "error" not in line]
        dropped = len(self.lines) - len(kept)
        if dropped:
            atomic_write_bytes(self.path, "".join(json.dumps(line) + "\n" for line in kept).encode())
            self.lines = kept
        return dropped

    def __enter__(self) -> JsonLines:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 (closed by __exit__)
        return self

    def write(self, answer: dict) -> None:
        """Appends one line, in one write, and flushes it to disk."""
        self._file.write((json.dumps(answer) + "\n").encode())
        self._file.flush()
        os.fsync(self._file.fileno())
        self.lines.append(answer)

    def __exit__(self, *exc) -> None:
        self._file.close()


def settings_of(predictor: Predictor, top_k: int, segments: float) -> dict:
    """What an output's answers depend on besides the videos."""
    return {"model_sha256": file_sha256(predictor.folder / "model.keras"), "top_k": top_k,
            "segments": segments}


def summarize(lines: list[dict]) -> dict:
    """Counts of an output: videos answered and failed; per top class, the videos it tops, or in
    a segment run the segments and seconds it tops and the videos it appears in; some failures."""
    answered = [line for line in lines if "error" not in line]
    failed = [line for line in lines if "error" in line]
    classes: dict[str, dict] = {}
    for line in answered:
        if "segments" in line:
            for name in {s["top"][0]["class"] for s in line["segments"]}:
                classes.setdefault(name, Counter())["videos"] += 1
            for segment in line["segments"]:
                counts = classes.setdefault(segment["top"][0]["class"], Counter())
                counts["segments"] += 1
                counts["seconds"] += segment["end"] - segment["start"]
        else:
            classes.setdefault(line["top"][0]["class"], Counter())["videos"] += 1
    by_class = {name: {k: round(v, 3) for k, v in sorted(counts.items())}
                for name, counts in sorted(classes.items(), key=lambda item: (-item[1]["videos"], item[0]))}
    return {"videos": len(lines), "answered": len(answered), "failed": len(failed), "classes": by_class,
            "failures": [{"video": f["video"], "error": f["error"]} for f in failed[:EXAMPLES]]}


class Printed:
    """Answers printed on stdout as JSON lines as they come: an output that nothing resumes."""

    done: frozenset[str] = frozenset()

    def __init__(self):
        self.lines: list[dict] = []

    def __enter__(self) -> Printed:
        return self

    def write(self, answer: dict) -> None:
        print(json.dumps(answer), flush=True)
        self.lines.append(answer)

    retried = 0

    def __exit__(self, *exc) -> None:
        pass


def predict(model: str | Path, sources: Sequence[str | Path], output: Path | None = None, **options) -> dict:
    """Answers the videos of the sources (``list_videos``) as ``predict_listed`` says."""
    return predict_listed(model, list_videos(sources), output, **options)


def predict_listed(model: str | Path, videos: list[str], output: Path | None = None, top_k: int = TOP_K,
                   segments: float = 0.0, batch_size: int = BATCH_SIZE, workers: int = 0,
                   retry_failed: bool = False, report: Path | None = None) -> dict:
    """Answers the videos into ``output`` (JSON Lines), skipping those it already holds (and with
    ``retry_failed`` trying again those it holds an error for), or without an output onto stdout;
    writes a ``report`` page if asked. Its summary (``summarize``), with how many videos this run
    predicted and skipped."""
    from tqdm import tqdm

    from components.serve_model.batch_report import report_html

    if output is not None and is_remote(str(output)):
        raise ValueError(f"{output}: write the predictions to a local file (a run appends to it as it goes, "
                         "which a bucket's objects do not allow), then copy it")
    predictor = Predictor(model)
    settings = settings_of(predictor, top_k, segments)
    with JsonLines(Path(output), settings, retry_failed) if output else Printed() as sink:
        done = sink.done
        todo = [video for video in videos if video not in done]
        if output:
            log.info("%d videos: %d answered in %s already, %d to predict%s", len(videos),
                     len(videos) - len(todo), output, len(todo),
                     f" ({sink.retried} failed before, tried again)" if sink.retried else "")
        with tqdm(total=len(todo), unit="video", desc="predict") as bar:
            for answer in answers(predictor, todo, top_k, segments, batch_size, workers):
                sink.write(answer)
                bar.update()
    summary = {**summarize(sink.lines), "predicted": len(todo), "skipped": len(videos) - len(todo),
               "model_classes": predictor.classes}
    if report:
        atomic_write_bytes(Path(report), report_html(summary, sink.lines, predictor.classes).encode())
        log.info("wrote the report %s", report)
    return summary


# Shards of the batch pipeline ------------------------------------------------------------------


def write_listing(sources: Sequence[str], path: Path, videos_per_shard: int = VIDEOS_PER_SHARD) -> list[int]:
    """Lists the sources' videos into ``path`` (JSON); the numbers of the shards they make."""
    if videos_per_shard < 1:
        raise ValueError(f"videos_per_shard must be at least 1, got {videos_per_shard}")
    videos = list_videos(sources)
    shards = math.ceil(len(videos) / videos_per_shard)
    write_json(path, {"sources": list(sources), "videos": videos, "videos_per_shard": videos_per_shard,
                      "shards": shards})
    log.info("%d videos in %d shards of up to %d", len(videos), shards, videos_per_shard)
    return list(range(shards))


def predict_shard(listing: Path, shard: int, model: str | Path, output_dir: Path, top_k: int = TOP_K,
                  segments: float = 0.0, batch_size: int = BATCH_SIZE, workers: int = 0) -> dict:
    """Answers one shard of a listing into ``output_dir``: its JSON lines, in the listing's
    order, and ``shard.json``, which says which shard it is and what it holds."""
    plan = json.loads(Path(listing).read_text())
    if not 0 <= shard < plan["shards"]:
        raise ValueError(f"shard must be in [0, {plan['shards']}), got {shard}")
    per = plan["videos_per_shard"]
    videos = plan["videos"][shard * per:(shard + 1) * per]
    log.info("shard %d of %d: %d videos", shard + 1, plan["shards"], len(videos))
    # Written here first: on a bucket mounted by FUSE (Vertex AI's /gcs/), each flush uploads the file.
    with tempfile.TemporaryDirectory(prefix="videoclf-shard-") as tmp:
        lines = Path(tmp) / PREDICTIONS_FILE
        summary = predict_listed(model, videos, lines, top_k, segments, batch_size, workers)
        atomic_write_bytes(Path(output_dir) / PREDICTIONS_FILE, lines.read_bytes())
    record = {"shard": shard, "shards": plan["shards"], "videos": videos,
              **{k: summary[k] for k in ("answered", "failed", "model_classes")}}
    write_json(Path(output_dir) / SHARD_FILE, record)
    return record


def gather_shards(part_dirs: Sequence[Path], output: Path) -> tuple[list[dict], list[str]]:
    """Joins the shards' lines into one JSON Lines file in the listing's order, whatever order the
    shards come in; checks that every shard is there and holds a line for each of its videos.
    The lines, and the model's classes."""
    parts = sorted(((json.loads((Path(d) / SHARD_FILE).read_text()), Path(d)) for d in part_dirs),
                   key=lambda part: part[0]["shard"])
    numbers = [record["shard"] for record, _ in parts]
    if not parts or numbers != list(range(parts[0][0]["shards"])):
        expected = parts[0][0]["shards"] if parts else "some"
        raise ValueError(f"the shards given are {numbers}, not all {expected} of one listing")
    lines = []
    for record, folder in parts:
        held = [json.loads(line) for line in (folder / PREDICTIONS_FILE).read_text().splitlines()]
        if [line["video"] for line in held] != record["videos"]:
            raise ValueError(f"shard {record['shard']} ({folder}) does not hold one line for each of its "
                             f"{len(record['videos'])} videos, in order")
        lines += held
    atomic_write_bytes(Path(output), "".join(json.dumps(line) + "\n" for line in lines).encode())
    log.info("gathered %d shards: %d videos", len(parts), len(lines))
    return lines, parts[0][0]["model_classes"]
