"""The HTTP service: answers equal the model's own recommendations, bad input gets a 4xx that
names the field, concurrent requests are batched, a failing request does not stop the service,
and ``attnrec serve`` answers on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import lightning as L
import pytest
import torch
from fastapi.testclient import TestClient

from attnrec import Recommender
from attnrec.data import SyntheticDataModule
from attnrec.data.serving import ServingData
from attnrec.service import app_from_checkpoint

TINY = dict(num_users=200, num_items=150, max_len=20, batch_size=64, eval_batch_size=256)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = SyntheticDataModule(**TINY)
    model = Recommender(data.catalog, dim=16, max_len=20)
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, datamodule=data)
    path = tmp_path_factory.mktemp("service") / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def app(checkpoint: Path) -> Any:
    return app_from_checkpoint(str(checkpoint), max_wait_ms=20)


@pytest.fixture(scope="module")
def client(app: Any) -> TestClient:
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def reference(checkpoint: Path) -> tuple[Recommender, ServingData]:
    model = Recommender.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()
    state = torch.load(checkpoint, weights_only=True)["attnrec_serving"]
    return model, ServingData(state, model.catalog)


def _expected(reference, batch, k: int, exclude_seen: bool = True) -> list[tuple[Any, float]]:
    model, _ = reference
    ids, scores = model.recommend(batch, k=k, exclude_seen=exclude_seen)
    return [(model.catalog.raw_ids[i], s) for i, s in zip(ids[0].tolist(), scores[0].tolist())]


def _pairs(response: httpx.Response) -> list[tuple[Any, float]]:
    assert response.status_code == 200, response.text
    return [(item["item"], item["score"]) for item in response.json()["items"]]


def _close(got: list[tuple[Any, float]], want: list[tuple[Any, float]]) -> bool:
    return [g[0] for g in got] == [w[0] for w in want] and all(abs(g[1] - w[1]) < 1e-4 for g, w in zip(got, want))


def test_health_once_the_model_is_loaded(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() | {"status": "ok", "items": 150, "users": 200} == response.json()


def test_a_known_user_gets_the_models_recommendations_with_titles(client: TestClient, reference) -> None:
    model, serving = reference
    user = serving.state["user_ids"][7]
    got = client.post("/recommend", json={"user": user, "k": 10})
    assert _close(_pairs(got), _expected(reference, serving.user_batch([user]), 10))
    items = got.json()["items"]
    assert items[0]["title"] == model.catalog.title(model.catalog.raw_ids.index(items[0]["item"]))
    seen = {model.catalog.raw_ids[i] for i in serving.history(7).tolist()}
    assert not seen & {item["item"] for item in items}
    kept = client.post("/recommend", json={"user": user, "k": 10, "exclude_seen": False})
    assert _close(_pairs(kept), _expected(reference, serving.user_batch([user]), 10, exclude_seen=False))


def test_unknown_history_items_are_ignored_and_reported(client: TestClient, reference) -> None:
    _, serving = reference
    history = [3, "no-such-item", 17, 42]
    response = client.post("/recommend", json={"history": history, "k": 5})
    assert response.json()["unknown_items"] == ["no-such-item"]
    assert _close(_pairs(response), _expected(reference, serving.history_batch([[3, 17, 42]]), 5))


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"user": "nobody"}, 404, "user"),
        ({"history": []}, 422, "history"),
        ({"history": list(range(1, 150)) * 2}, 422, "history"),
        ({"history": ["x", "y"]}, 422, "history"),
        ({"history": [{"item": 1}]}, 422, "history"),
        ({"user": 1, "k": 0}, 422, "k"),
        ({"user": 1, "k": 10**6}, 422, "k"),
        ({"user": 1, "k": "ten"}, 422, "k"),
        ({"user": 1, "k": 2.5}, 422, "k"),
        ({"user": 1, "history": [1]}, 422, "user, history"),
        ({"k": 3}, 422, "user, history"),
        ({"user": 1, "exclude_seen": "no"}, 422, "exclude_seen"),
        ({"user": 1, "limit": 3}, 422, "limit"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(client: TestClient, body: dict, status: int, field: str) -> None:
    response = client.post("/recommend", json=body)
    assert response.status_code == status, response.text
    assert re.match(rf"{re.escape(field)}[:\[]", response.json()["detail"]), response.json()["detail"]


def test_a_body_that_is_not_json_is_a_4xx(client: TestClient) -> None:
    response = client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_concurrent_requests_are_batched_and_answered_as_alone(app: Any, reference) -> None:
    _, serving = reference
    users = serving.state["user_ids"][1:33]

    async def ask() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return await asyncio.gather(*(client.post("/recommend", json={"user": u, "k": 5}) for u in users))

    before = app.state.batcher.stats.batches
    responses = asyncio.run(ask())
    stats = app.state.batcher.stats
    assert stats.largest > 1 and stats.batches - before < len(users)  # grouped, not one by one
    for user, response in zip(users, responses):
        assert _close(_pairs(response), _expected(reference, serving.user_batch([user]), 5))


def test_a_failing_request_is_a_500_and_the_service_goes_on(client: TestClient, app: Any, monkeypatch) -> None:
    service = app.state.recommendations
    original = service.rank
    calls = []

    def fail_once(requests):
        calls.append(len(requests))
        if len(calls) == 1:
            raise RuntimeError("simulated failure")
        return original(requests)

    monkeypatch.setattr(app.state.batcher, "fn", fail_once)
    failed = client.post("/recommend", json={"user": 1, "k": 3})
    assert failed.status_code == 500 and "simulated failure" in failed.json()["detail"]
    assert client.post("/recommend", json={"user": 1, "k": 3}).status_code == 200


@pytest.mark.slow
def test_attnrec_serve_answers_on_loopback(checkpoint: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "attnrec.cli", "serve", f"--ckpt_path={checkpoint}", f"--port={port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as health:
                    assert health.status == 200
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read() if server.stdout else ""
                time.sleep(0.5)
        request = urllib.request.Request(
            f"{url}/recommend", data=json.dumps({"history": [1, 2, 3], "k": 4}).encode(),
            headers={"content-type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            assert len(json.loads(response.read())["items"]) == 4
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_ann_retrieval_answers_as_exact_ranking_with_an_exact_index(checkpoint: Path, client: TestClient, reference) -> None:
    """The ``--ann`` path (query vectors, index search, seen items excluded) against exact
    ranking, with faiss's exact index so any difference is the path's, not the approximation's."""
    _, serving = reference
    with TestClient(app_from_checkpoint(str(checkpoint), index_kind="flat")) as ann_client:
        assert ann_client.get("/health").json()["retrieval"] == "ann (flat)"
        for user in serving.state["user_ids"][1:6]:
            body = {"user": user, "k": 10}
            assert _close(_pairs(ann_client.post("/recommend", json=body)), _pairs(client.post("/recommend", json=body)))
