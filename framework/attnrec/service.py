"""``attnrec serve``: recommendations over HTTP (FastAPI on uvicorn, the ``serve`` extra).

FastAPI because its request models (pydantic) give the 4xx answers that name the field for
free, its ``TestClient``/httpx run the app in-process for tests and notebooks, and it adds no
process model of its own: one uvicorn process holds one model, which on a few CPU cores is what
a small model wants. Concurrent requests are batched by :class:`MicroBatcher` (one encoder and
catalogue pass for up to ``max_batch`` requests arriving within ``max_wait_ms``), which is what
LitServe would have offered beside its own worker processes.

Requests are built from the checkpoint alone (:class:`~attnrec.data.serving.ServingData`):
``{"user": id}`` recommends after that user's known interactions, ``{"history": [ids]}`` after
the given items (oldest first). Unknown history items are ignored and reported. Scores come
from exact ranking over the catalogue, or from an :class:`~attnrec.ann.AnnIndex` when given.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr

from .data.sequences import Collate
from .data.serving import ServingData
from .model import Recommender

MAX_K = 1000
UNION_TAGS = {"str", "int"}  # pydantic's names for the members of `str | int` in an error's location


class RecommendRequest(BaseModel):
    """A user's raw id or a history of raw item ids (oldest first); types are strict, so
    ``"k": "10"`` is refused rather than guessed, and unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    user: StrictStr | StrictInt | None = None
    history: list[StrictStr | StrictInt] | None = None
    k: StrictInt = 10
    exclude_seen: StrictBool = True


class Item(BaseModel):
    item: Any
    score: float
    title: str | None = None


class RecommendResponse(BaseModel):
    items: list[Item]
    unknown_items: list[Any] = []


@dataclass
class Request:
    """One prepared request: internal item ids to encode and to exclude, and the list length."""

    history: np.ndarray
    seen: np.ndarray
    k: int
    user: int = 0


@dataclass
class BatchStats:
    """How requests were grouped: the number of batches run and the largest one."""

    batches: int = 0
    requests: int = 0
    largest: int = 0
    sizes: list[int] = field(default_factory=list)

    def add(self, size: int) -> None:
        self.batches += 1
        self.requests += size
        self.largest = max(self.largest, size)
        self.sizes = (self.sizes + [size])[-1000:]


class MicroBatcher:
    """Runs ``fn(items) -> results`` on groups of concurrently submitted items, in a worker
    thread so the event loop keeps accepting requests. A group is what arrived while the
    previous one ran, or within ``max_wait_s`` of its first item, at most ``max_batch``. An
    exception fails the group's requests only; the loop goes on."""

    def __init__(self, fn: Callable[[list[Any]], list[Any]], max_batch: int = 32, max_wait_s: float = 0.002) -> None:
        self.fn, self.max_batch, self.max_wait_s = fn, max_batch, max_wait_s
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        # started lazily in the loop that serves (an app moved to another loop, as tests do
        # with several clients, gets a queue and a task there)
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._run(self._queue))
        assert self._queue is not None
        future: asyncio.Future[Any] = loop.create_future()
        await self._queue.put((item, future))
        return await future

    async def _run(self, queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            group = [await queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(group) < self.max_batch:
                try:
                    group.append(queue.get_nowait())
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        group.append(await asyncio.wait_for(queue.get(), remaining))
                    except asyncio.TimeoutError:
                        break
            self.stats.add(len(group))
            try:
                results = await asyncio.to_thread(self.fn, [item for item, _ in group])
            except Exception as exc:  # noqa: BLE001 - answered as a 500 to these requests only
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(group, results):
                if not future.done():
                    future.set_result(result)


class Recommendations:
    """The model side of the service: validated requests in, ranked raw ids out.

    Args:
        model: a trained ``Recommender`` (put in eval mode here).
        serving: the checkpoint's users and catalogue (:class:`ServingData`).
        max_k: the longest list a request may ask for (at most the catalogue size).
        max_history: the most history items a request may send (default ``10 * max_len``).
        index: an :class:`~attnrec.ann.AnnIndex` to retrieve with instead of exact ranking.
    """

    def __init__(
        self,
        model: Recommender,
        serving: ServingData,
        max_k: int = MAX_K,
        max_history: int | None = None,
        index: Any = None,
    ) -> None:
        self.model = model.eval()
        self.serving = serving
        self.catalog = model.catalog
        self.max_len = int(serving.max_len or model.hparams.get("max_len") or 50)
        self.max_k = min(max_k, self.catalog.num_items)
        self.max_history = max_history or 10 * self.max_len
        self.index = index
        self.collate = Collate(self.max_len, pad="longest")

    # ------------------------------------------------------------- requests
    def for_user(self, user: Any, k: int, exclude_seen: bool) -> Request:
        """Raises ``KeyError`` naming an unknown user."""
        index = self.serving.user_index(user)
        items = self.serving.history(index)
        return Request(items[-self.max_len :], items if exclude_seen else items[:0], k, user=index)

    def for_history(self, history: Sequence[Any], k: int, exclude_seen: bool) -> tuple[Request, list[Any]]:
        """The request and the raw ids not in the catalogue (ignored)."""
        known, unknown = [], []
        for item in history:
            try:
                known.append(self.serving.item_index(item))
            except KeyError:
                unknown.append(item)
        items = np.asarray(known, dtype=np.int64)
        return Request(items[-self.max_len :], items if exclude_seen else items[:0], k), unknown

    # -------------------------------------------------------------- ranking
    @torch.no_grad()
    def rank(self, requests: list[Request]) -> list[list[dict[str, Any]]]:
        """Top lists for a group of requests, in one encoder pass."""
        batch = self.collate([{"user": r.user, "history": r.history, "seen": r.seen} for r in requests])
        k = max(r.k for r in requests)
        if self.index is None:
            ids, scores = self.model.recommend(batch, k=k, exclude_seen=True)
        else:
            from .export import query_vectors

            ids, scores = self.index.search(query_vectors(self.model, batch), k, exclude=[r.seen for r in requests])
        return [self._items(ids[i, : r.k].tolist(), scores[i, : r.k].tolist()) for i, r in enumerate(requests)]

    def _items(self, ids: list[int], scores: list[float]) -> list[dict[str, Any]]:
        titles = self.catalog.titles
        return [
            {"item": self.catalog.raw_ids[i], "score": score, "title": titles[i] if titles else None}
            for i, score in zip(ids, scores)
            if i != 0
        ]


def create_app(recommendations: Recommendations, max_batch: int = 32, max_wait_ms: float = 2.0) -> Any:
    """The FastAPI app: ``GET /health`` and ``POST /recommend`` (see the module's docstring).
    Every 4xx answer is ``{"detail": "<field>: <what is wrong>"}``."""
    from fastapi import FastAPI, HTTPException, Request as HTTPRequest
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    service = recommendations
    batcher = MicroBatcher(service.rank, max_batch=max_batch, max_wait_s=max_wait_ms / 1000)

    app = FastAPI(title="attnrec", summary=f"{type(service.model).__name__} over {service.catalog.num_items} items")
    app.state.batcher = batcher
    app.state.recommendations = service

    @app.exception_handler(RequestValidationError)
    async def one_line(_: HTTPRequest, exc: RequestValidationError) -> JSONResponse:
        by_field: dict[str, list[str]] = {}
        for error in exc.errors():  # body.history.0.str -> history[0]; a union's member tag dropped
            where = ""
            for part in error["loc"][1:] if error["loc"][:1] == ("body",) else error["loc"]:
                if isinstance(part, int):
                    where += f"[{part}]"
                elif part not in UNION_TAGS:
                    where += f".{part}" if where else str(part)
            messages = by_field.setdefault(where or "body", [])
            if error["msg"] not in messages:
                messages.append(error["msg"])
        detail = "; ".join(f"{where}: {' or '.join(messages)}" for where, messages in by_field.items())
        return JSONResponse({"detail": detail}, status_code=422)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": type(service.model).__name__,
            "items": service.catalog.num_items,
            "users": len(service.serving.state["user_ids"]) - 1 if service.serving.state else 0,
            "retrieval": "exact" if service.index is None else f"ann ({service.index.kind})",
        }

    @app.post("/recommend")
    async def recommend(body: RecommendRequest) -> RecommendResponse:
        if (body.user is None) == (body.history is None):
            raise HTTPException(422, "user, history: give one of them (a known user's id, or raw item ids)")
        if not 1 <= body.k <= service.max_k:
            raise HTTPException(422, f"k: must be between 1 and {service.max_k}, got {body.k}")
        unknown: list[Any] = []
        if body.user is not None:
            try:
                request = service.for_user(body.user, body.k, body.exclude_seen)
            except KeyError as exc:
                raise HTTPException(404, f"user: {exc.args[0]}") from None
        else:
            assert body.history is not None
            if not body.history:
                raise HTTPException(422, "history: empty; give at least one raw item id, oldest first")
            if len(body.history) > service.max_history:
                raise HTTPException(
                    422, f"history: {len(body.history)} items; at most {service.max_history} (the latest "
                    f"{service.max_len} are encoded, all are excluded)"
                )  # fmt: skip
            request, unknown = service.for_history(body.history, body.k, body.exclude_seen)
            if not len(request.history):
                raise HTTPException(422, f"history: none of the {len(unknown)} items is in the catalogue")
        try:
            items = await batcher.submit(request)
        except Exception as exc:  # noqa: BLE001 - the process keeps serving
            raise HTTPException(500, f"recommendation failed: {type(exc).__name__}: {exc}") from None
        return RecommendResponse(items=[Item(**item) for item in items], unknown_items=unknown)

    return app


def app_from_checkpoint(
    ckpt_path: str, index_kind: str | None = None, model: Recommender | None = None, **kwargs: Any
) -> Any:
    """The app for a checkpoint file (its users and catalogue only; no data is read), with an
    ANN index of ``index_kind`` (``hnsw``, ``ivf``) when given; ``model``: the checkpoint's
    model when already loaded. ``kwargs`` go to :func:`create_app` (``max_batch``,
    ``max_wait_ms``) or :class:`Recommendations`."""
    from .checkpoints import read_checkpoint
    from .plugins import get_registry

    if model is None:
        get_registry()
        model = Recommender.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    state = read_checkpoint(ckpt_path, check=False)  # verified when the model loaded
    serving = ServingData(state.get("attnrec_serving"), model.catalog, model.hparams.get("max_len"))
    index = None
    if index_kind:
        from .ann import AnnIndex

        index = AnnIndex.from_model(model, kind=index_kind)
    app_args = {key: kwargs.pop(key) for key in ("max_batch", "max_wait_ms") if key in kwargs}
    return create_app(Recommendations(model, serving, index=index, **kwargs), **app_args)
