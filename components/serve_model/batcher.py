"""Concurrent requests' videos gathered into model batches, in the server's own process.

While the model runs one batch, the videos that arrive wait; when it is done, the next batch
takes all of them, up to ``max_clips`` clips (a video is never split, so one with more clips runs
alone). A lone request waits for nothing, and busy ones share each run of the model: no timer,
no second process. The model runs on one thread of its own, off the event loop. If a batch of
several videos fails, each is run again alone, so an error stays with the video (and so the
request) that caused it. ``videoclf_batch_clips`` on ``/metrics`` counts the clips of each batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from prometheus_client import Histogram

log = logging.getLogger(__name__)

BATCH_CLIPS = Histogram("videoclf_batch_clips", "clips in each model batch",
                        buckets=(*range(1, 33), 64, 128, 256))


class Batcher:
    """``await batcher(videos)``: each video's output of ``run``, which takes a list of videos
    (their clips) and gives one output row a video, run over the videos of many callers at once."""

    def __init__(self, run: Callable[[list[np.ndarray]], np.ndarray], max_clips: int):
        self.run, self.max_clips = run, max_clips
        self.waiting: deque[tuple[np.ndarray, asyncio.Future]] = deque()
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.draining: asyncio.Task | None = None

    async def __call__(self, videos: list[np.ndarray]) -> list[np.ndarray]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in videos]
        self.waiting.extend(zip(videos, futures, strict=True))
        if self.draining is None or self.draining.done():
            self.draining = asyncio.create_task(self.drain())
        return list(await asyncio.gather(*futures))

    async def drain(self) -> None:
        """Runs batches while videos wait."""
        while self.waiting:
            batch, clips = [], 0
            while self.waiting and (not batch or clips + len(self.waiting[0][0]) <= self.max_clips):
                video, future = self.waiting.popleft()
                if not future.cancelled():
                    batch.append((video, future))
                    clips += len(video)
            if not batch:
                continue
            try:
                await self.answer(batch, clips)
            except Exception as e:  # whatever went wrong, no caller is left waiting
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)

    async def answer(self, batch: list[tuple[np.ndarray, asyncio.Future]], clips: int) -> None:
        loop = asyncio.get_running_loop()
        BATCH_CLIPS.observe(clips)
        try:
            outputs = await loop.run_in_executor(self.model_thread, self.run, [video for video, _ in batch])
        except Exception as e:
            if len(batch) > 1:
                log.warning("a batch of %d videos failed (%s): running each alone", len(batch), e)
                for one in batch:
                    await self.answer([one], len(one[0]))
                return
            outputs = [e]
        for (_, future), output in zip(batch, outputs, strict=True):
            if future.done():  # its caller gave up waiting
                continue
            if isinstance(output, Exception):
                future.set_exception(output)
            else:
                future.set_result(output)

    def close(self) -> None:
        self.model_thread.shutdown(wait=True)
