"""The in-process backend: the tuned model run by `model_store.llm.scorer.PromptScorer`, with micro-batching.

torch is imported only inside `load_prompt_scorer`, which runs in a worker thread when backend=local, so the
other backends never pay for it. Loading happens in the background: the service starts at once, and /readyz
says "not ready" (503, "warming up") until the model is in memory AND has scored a real warm-up request
(`warm_up`: one user prefix and a chunk of candidates of serving length, so the first client request finds
the kernels initialised and the weights packed, not a cold model). A model that fails to load makes the
service answer with the code-only fallback (/readyz "degraded"), not stay unready.

Micro-batching: concurrent requests queue their prompt groups; one batcher task takes the first, keeps
gathering for up to `batch_wait_ms` (or until `max_batch_prompts` prompts), then runs the whole batch in ONE
worker-thread call. Why: torch already uses every core for one forward pass, so running requests side by
side in several threads only makes them fight over cores and memory bandwidth; one thread at a time keeps
each forward pass fast, the event loop free, and pays the thread hand-off once per batch. Groups of
concurrent requests that share a prefix (the same user and wording) are merged, so the shared prefix is
computed once for all of them. The cost is up to `batch_wait_ms` of added latency under light load.

Fairness: a batch that mixes small jobs (at most `small_job_prompts` prompts: a 1-candidate request, the tail
of a chunked one) with larger ones runs as two calls, the small jobs first, so their answers do not wait for
the large chunks they were gathered with; they wait only for the call already running, whose size
`max_batch_prompts` bounds (and the service's chunking keeps each large request to one chunk in the queue).

    BINLLM_BACKEND=local BINLLM_LOCAL__MODEL_DIR=artifacts/demo/model uvicorn app.main:app
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from app import metrics
from app.errors import BackendUnavailableError
from app.scorers.base import PromptGroup
from app.settings import LocalSettings

logger = logging.getLogger(__name__)


class PrefixScorer(Protocol):
    """What LocalScorer needs from the model: P(Yes) of `prefix + suffix` per (prefix, suffixes) (blocking)."""

    def score_groups(self, groups: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """P(Yes) per suffix of each group; several users' groups run in shared forward passes."""
        ...


def load_prompt_scorer(
    model_dir: Path, threads: int | None = None, dtype: str = "float32", prefix_cache_mb: int = 256
) -> PrefixScorer:
    """Load a servable model directory into a PromptScorer (blocking; imports torch).

    `PromptScorer.from_dir` is also what `binllm llm eval` loads, so the two score alike.
    """
    import torch

    from model_store.llm.scorer import PromptScorer

    if threads is not None:
        torch.set_num_threads(threads)
    scorer: PrefixScorer = PromptScorer.from_dir(
        model_dir, dtype=dtype, prefix_cache_bytes=prefix_cache_mb << 20
    )
    return scorer


WARM_UP_PREFIX = (
    "#Question: A user has given high ratings to the following movies: "
    + ", ".join(f'"Movie number {n} (19{50 + n})"' for n in range(10))
    + ". Additionally, we have information about the user's preferences encoded in the feature 0a1b2c3d. "
    + "Using all available information, make a prediction about whether the user would enjoy the movie"
)
WARM_UP_CANDIDATES = 32  # one chunk of the service's default size


def warm_up(scorer: PrefixScorer) -> float:
    """Score one user prefix and a chunk of serving-length candidates (blocking); the seconds it took.

    The first forward passes of a freshly loaded model are slow (thread pools started, kernels chosen and
    weights packed for each shape): paying that here keeps it off the first client request.
    """
    suffixes = [
        f' titled "Candidate {n} (2001)" with feature {n:08x}? #Answer:' for n in range(WARM_UP_CANDIDATES)
    ]
    started = time.perf_counter()
    scorer.score_groups([(WARM_UP_PREFIX, suffixes[:1])])
    scorer.score_groups([(WARM_UP_PREFIX, suffixes)])
    return time.perf_counter() - started


def score_batch(scorer: PrefixScorer, batch: Sequence[Sequence[PromptGroup]]) -> list[list[list[float]]]:
    """Score the groups of several requests in one model call (blocking): users batched together.

    Groups with the same prefix are merged (distinct suffixes only) and their scores handed back per request.
    """
    by_prefix: dict[str, dict[str, int]] = {}
    for groups in batch:
        for group in groups:
            suffix_index = by_prefix.setdefault(group.prefix, {})
            for suffix in group.suffixes:
                suffix_index.setdefault(suffix, len(suffix_index))
    merged = scorer.score_groups([(prefix, list(index)) for prefix, index in by_prefix.items()])
    scores = dict(zip(by_prefix, merged, strict=True))
    return [
        [[scores[g.prefix][by_prefix[g.prefix][s]] for s in g.suffixes] for g in groups] for groups in batch
    ]


def _cache_counts(scorer: PrefixScorer) -> tuple[int, int]:
    """(hits, misses) of the scorer's prefix cache so far; (0, 0) without one."""
    cache = getattr(scorer, "prefix_cache", None)
    return (cache.hits, cache.misses) if cache is not None else (0, 0)


@dataclass
class _Job:
    groups: Sequence[PromptGroup]
    future: asyncio.Future[list[list[float]]]

    @property
    def n_prompts(self) -> int:
        return sum(len(group.suffixes) for group in self.groups)


class LocalScorer:
    """Scorer running a PrefixScorer in one worker thread, fed by a micro-batching queue."""

    name = "local"

    def __init__(
        self,
        loader: Callable[[], PrefixScorer],
        *,
        batch_wait_ms: float = 2.0,
        max_batch_prompts: int = 256,
        small_job_prompts: int = 4,
        warm_up: Callable[[PrefixScorer], float] | None = None,
    ) -> None:
        self._loader = loader
        self._warm_up = warm_up
        self._wait_s = batch_wait_ms / 1000.0
        self._max_prompts = max_batch_prompts
        self._small_prompts = small_job_prompts
        self._scorer: PrefixScorer | None = None
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._tasks: list[asyncio.Task[Any]] = []
        self._load_error: str | None = None
        self._loading = False
        self.engine: str | None = None  # what runs the model once loaded ("torch-bfloat16"), for /readyz
        self.batches_run = 0  # worker-thread calls so far (observability, tests)
        self._cache_counts = (0, 0)  # the prefix cache's hits and misses already exported to /metrics

    @classmethod
    def from_settings(cls, settings: LocalSettings) -> LocalScorer:
        """A scorer that will load `settings.model_dir` when started."""
        return cls(
            lambda: load_prompt_scorer(
                settings.model_dir, settings.threads, settings.dtype, settings.prefix_cache_mb
            ),
            batch_wait_ms=settings.batch_wait_ms,
            max_batch_prompts=settings.max_batch_prompts,
            small_job_prompts=settings.small_job_prompts,
            warm_up=warm_up,
        )

    async def start(self) -> None:
        """Begin loading the model in a worker thread and start the batcher; returns at once."""
        self._loading = True
        self._tasks = [asyncio.create_task(self._load()), asyncio.create_task(self._batch_forever())]

    async def _load(self) -> None:
        try:
            scorer = await asyncio.to_thread(self._loader)
            if self._warm_up is not None:
                seconds = await asyncio.to_thread(self._warm_up, scorer)
                logger.info("local scorer: warm-up scoring took %.2f s", seconds)
            self.engine = getattr(scorer, "engine", None)
            self._cache_counts = _cache_counts(scorer)  # the warm-up's lookups are not clients'
            self._scorer = scorer
            logger.info("local scorer: model loaded (%s)", self.engine)
        except Exception as exc:  # reported by ready() and every request, not fatal to the process
            self._load_error = f"model failed to load: {exc}"
            logger.exception("local scorer: model failed to load")
        finally:
            self._loading = False

    def warming_up(self) -> bool:
        """True while the model loads and runs its warm-up scoring (/readyz: not ready yet)."""
        return self._loading

    async def score(self, groups: Sequence[PromptGroup]) -> list[list[float]]:
        """Queue the groups for the next micro-batch and wait for their scores."""
        if self._scorer is None:
            raise BackendUnavailableError(self._load_error or "local model is still loading")
        future: asyncio.Future[list[list[float]]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(groups, future))
        return await future

    async def _gather(self) -> list[_Job]:
        """The first waiting job plus whatever arrives within the batch window, up to the prompt limit."""
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        n_prompts = batch[0].n_prompts
        deadline = loop.time() + self._wait_s
        while n_prompts < self._max_prompts:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            batch.append(job)
            n_prompts += job.n_prompts
        return batch

    def _calls(self, batch: list[_Job]) -> list[list[_Job]]:
        """The model calls for one batch: small jobs first, on their own, when larger jobs came with them."""
        small = [job for job in batch if job.n_prompts <= self._small_prompts]
        large = [job for job in batch if job.n_prompts > self._small_prompts]
        return [small, large] if small and large else [batch]

    async def _run(self, jobs: list[_Job]) -> None:
        """One worker-thread call for `jobs`; each job's future gets its scores or the call's error."""
        jobs = [job for job in jobs if not job.future.done()]  # drop cancelled
        if not jobs or self._scorer is None:
            return
        self.batches_run += 1
        try:
            results = await asyncio.to_thread(score_batch, self._scorer, [job.groups for job in jobs])
        except Exception as exc:
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        finally:
            self._export_cache_metrics()
        for job, result in zip(jobs, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)

    def _export_cache_metrics(self) -> None:
        """Add the prefix cache's hits and misses since the last call to /metrics, and its size."""
        if self._scorer is None:
            return
        hits, misses = _cache_counts(self._scorer)
        metrics.PREFIX_CACHE_HITS.inc(hits - self._cache_counts[0])
        metrics.PREFIX_CACHE_MISSES.inc(misses - self._cache_counts[1])
        self._cache_counts = (hits, misses)
        cache = getattr(self._scorer, "prefix_cache", None)
        metrics.PREFIX_CACHE_BYTES.set(cache.bytes if cache is not None else 0)

    async def _batch_forever(self) -> None:
        while True:
            for jobs in self._calls(await self._gather()):
                await self._run(jobs)

    async def ready(self) -> bool:
        """True once the model is loaded and the batcher runs."""
        return self._scorer is not None and all(not task.done() for task in self._tasks[1:])

    async def aclose(self) -> None:
        """Stop the batcher, fail queued requests, drop the model."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(BackendUnavailableError("service shutting down"))
        self._scorer = None
