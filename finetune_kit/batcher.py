"""Micro-batching for the HTTP server: the inputs of concurrent requests are run through the
model together, on one worker thread, and each request gets its own predictions back.

Every request is checked on its own first (the task's ``to_examples``, then its ``validate`` on
the request's rows), so a bad request is refused before it can share a batch with good ones. A
batch that still fails is run again request by request: only the request at fault gets the error.

Merged rows must predict exactly what each request alone predicts, so rows are merged only where
that holds: requests whose first rows have the same columns (``rows_dataset`` takes the first
row's columns, and a task may read its layout off them); and the ``id`` column, which a task
may require to be unique in a dataset (question answering numbers the questions of each request
from 0), made unique while they run and put back in the predictions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pyarrow import ArrowException

from .data import ITEM_COLUMN
from .inference import input_dataset, rows_dataset
from .task import DataError, TaskError

# The column a task may require to be unique within a dataset.
ID_COLUMN = "id"
# The source the task's validation messages name (``inputs item 3: ...``).
SOURCE = "inputs"


@dataclass
class BatchStats:
    """Counters of what the batcher has done since the server started."""

    requests: int = 0  # requests answered with predictions
    inputs: int = 0  # inputs predicted for
    batches: int = 0  # predict calls over merged rows (each of one request or more)
    largest_batch_requests: int = 0  # the most requests merged into one predict call
    largest_batch_inputs: int = 0  # the most inputs run in one predict call
    fallbacks: int = 0  # batches that failed and were run again request by request


@dataclass
class _Pending:
    rows: list[dict[str, Any]]
    future: asyncio.Future


class MicroBatcher:
    """Gathers requests into batches of at most ``max_batch_size`` inputs, waiting at most
    ``max_wait_ms`` after the first one, and runs each batch as one predict call; a request of
    more inputs than ``max_batch_size`` runs as a batch of its own.

    ``start`` and ``stop`` run in the server's event loop (its lifespan). The predictor and its task
    are only ever used on the one worker thread: torch gains nothing from two forward passes at
    once on a few cores, and a tokenizer must not be used from two threads at once.
    """

    def __init__(self, predictor: Any, max_batch_size: int = 64, max_wait_ms: float = 5.0) -> None:
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.stats = BatchStats()
        self._executor: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[_Pending] | None = None
        self._collector: asyncio.Task | None = None
        self._held: _Pending | None = None  # a request that did not fit the batch being gathered

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finetune-kit-predict")
        self._queue = asyncio.Queue()
        self._collector = asyncio.create_task(self._collect())

    async def stop(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    async def _on_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None:
            raise RuntimeError("the batcher is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def predict(self, inputs: list[Any]) -> list[dict[str, Any]]:
        """The predictions for one request's inputs, as ``predictor.predict(inputs)`` gives them;
        its ``TaskError``/``DataError`` when the inputs are not what the task reads."""
        rows = await self._on_worker(self.check, inputs)
        if not rows:
            return []
        pending = _Pending(rows, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        return await pending.future

    def check(self, inputs: list[Any]) -> list[dict[str, Any]]:
        """A request's rows, as ``Predictor.predict`` makes and validates them. When they fail, the
        first input that fails alone is named (``inputs item 3: ...``)."""
        task = self.predictor.task
        try:
            rows = task.to_examples(inputs)
            task.validate(input_dataset(rows, SOURCE), "predict", SOURCE)
        except (TaskError, DataError) as exc:
            raise self._culprit(inputs) or exc from None
        return rows

    def _culprit(self, inputs: list[Any]) -> Exception | None:
        """The error of the first input that fails on its own (None: each is fine alone)."""
        task = self.predictor.task
        for number, value in enumerate(inputs, start=1):
            try:
                rows = task.to_examples([value])
            except (TaskError, DataError) as exc:
                return type(exc)(f"{SOURCE} item {number}: {exc}")
            numbered = [{**row, ITEM_COLUMN: number} if ITEM_COLUMN in row else row for row in rows]
            source = SOURCE if any(ITEM_COLUMN in row for row in rows) else f"{SOURCE} item {number}"
            try:
                task.validate(rows_dataset(numbered), "predict", source)
            except (TaskError, DataError) as exc:
                return exc
            except ArrowException as exc:
                return DataError(f"{SOURCE} item {number}: {exc}")
        return None

    async def _collect(self) -> None:
        while True:
            batch = await self._gather()
            try:
                outcomes = await self._on_worker(self._run_batch, [p.rows for p in batch])
            except Exception as exc:  # noqa: BLE001 - the batch's requests get it; the next batch runs
                outcomes = [exc] * len(batch)
            for pending, outcome in zip(batch, outcomes):
                if pending.future.done():  # the client went away
                    continue
                if isinstance(outcome, BaseException):
                    pending.future.set_exception(outcome)
                else:
                    pending.future.set_result(outcome)

    async def _gather(self) -> list[_Pending]:
        """The next batch: the first request waiting, then whatever else arrives within
        ``max_wait_ms`` while the batch has room."""
        loop = asyncio.get_running_loop()
        first = self._held or await self._queue.get()
        self._held = None
        batch, size = [first], len(first.rows)
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch_size:
            try:
                pending = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    pending = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11
                    break
            if size + len(pending.rows) > self.max_batch_size:
                self._held = pending
                break
            batch.append(pending)
            size += len(pending.rows)
        return batch

    def _run_batch(self, requests: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]] | BaseException]:
        """On the worker thread: one predict call per group of requests whose rows merge; a group
        that fails is run again request by request."""
        outcomes: list[Any] = [None] * len(requests)
        groups: dict[tuple[str, ...], list[int]] = {}
        for index, rows in enumerate(requests):
            groups.setdefault(tuple(sorted(rows[0])), []).append(index)
        for members in groups.values():
            try:
                merged = self._predict_merged([requests[i] for i in members])
            except Exception as exc:  # noqa: BLE001 - the culprit is found below
                if len(members) == 1:
                    outcomes[members[0]] = exc
                    continue
                self.stats.fallbacks += 1
                for i in members:
                    try:
                        [outcomes[i]] = self._predict_merged([requests[i]])
                    except Exception as alone:  # noqa: BLE001 - it goes to that request only
                        outcomes[i] = alone
                continue
            for i, predictions in zip(members, merged):
                outcomes[i] = predictions
        return outcomes

    def _predict_merged(self, requests: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
        """Run the rows of several requests as one dataset; the predictions of each request."""
        renamed = len(requests) > 1 and ID_COLUMN in requests[0][0]
        rows = [_with_unique_id(row, number) if renamed else row
                for number, request in enumerate(requests) for row in request]
        predictions = self.predictor.predict_dataset(rows_dataset(rows), SOURCE)
        answers, start = [], 0
        for number, request in enumerate(requests):
            own = predictions[start : start + len(request)]
            if renamed:
                own = [_with_request_id(prediction, row, number) for prediction, row in zip(own, request)]
            answers.append(own)
            start += len(request)
        self.stats.batches += 1
        self.stats.requests += len(requests)
        self.stats.inputs += len(rows)
        self.stats.largest_batch_requests = max(self.stats.largest_batch_requests, len(requests))
        self.stats.largest_batch_inputs = max(self.stats.largest_batch_inputs, len(rows))
        return answers


def _unique_id(value: Any, request: int) -> str:
    return f"{request}:{value}"


def _with_unique_id(row: dict[str, Any], request: int) -> dict[str, Any]:
    if row.get(ID_COLUMN) is None:
        return row
    return {**row, ID_COLUMN: _unique_id(row[ID_COLUMN], request)}


def _with_request_id(prediction: Any, row: dict[str, Any], request: int) -> Any:
    """A prediction that carries the id its row ran with carries the request's own id again (as
    a string, as the task wrote the one it ran with)."""
    value = row.get(ID_COLUMN)
    if value is None or not isinstance(prediction, dict) or prediction.get(ID_COLUMN) != _unique_id(value, request):
        return prediction
    return {**prediction, ID_COLUMN: str(value)}
