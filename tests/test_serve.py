"""``finetune-kit serve``: one real server process (a tiny text classifier) answering concurrent
requests in batches, exactly as ``Predictor.predict``; bad requests refused with one line; a
model that does not load stops the command. The request shapes of other tasks, the fallback of
a failing batch and the page go through the app in this process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import finetune_kit as fk
from finetune_kit.cli import app as cli_app
from finetune_kit.serve import ServeLimits, create_app, load_predictor
from tests.conftest import NEGATIVE, POSITIVE, one_torch_thread, write_csv
from tests.test_question_answering import toy_squad, write_squad
from tests.test_token_classification import SENTENCES, conll_text

QUICK = dict(max_steps=1, report_plots=False, bootstrap_resamples=0, save_total_limit=0)
# The real server's options: small limits, so that each is easy to cross.
SERVER_OPTIONS = ["--max-batch-size", "16", "--max-wait-ms", "20", "--max-inputs", "40",
                  "--max-input-chars", "200", "--max-body-bytes", "4096"]
one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)

WORDS = "good bad movie film great awful acting plot music scene love hate story fine poor day".split()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def text_model(tiny_encoder, work) -> Path:
    """A tiny text classifier, trained for one step: what the real server serves."""
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(write_csv(work / "text.csv", rows)),
             output_dir=str(work / "text"), **QUICK)
    return work / "text"


@pytest.fixture(scope="module")
def models(tiny_encoder, work, text_model) -> dict[str, Path]:
    """Tiny models of four tasks, each trained for one step."""
    pairs = [{"text": a, "text_pair": b, "label": "same" if i % 2 else "other"}
             for i, (a, b) in enumerate(zip(POSITIVE + NEGATIVE, NEGATIVE + POSITIVE))]
    ner = work / "ner.conll"
    ner.write_text(conll_text(SENTENCES), encoding="utf-8")
    runs = {
        "pair": dict(task="pair-classification", train_file=str(write_csv(work / "pair.csv", pairs))),
        "ner": dict(task="token-classification", train_file=str(ner)),
        "qa": dict(task="question-answering", train_file=str(write_squad(work / "qa.json", toy_squad())),
                   max_length=32, task_options={"doc_stride": 8}),
    }
    for name, settings in runs.items():
        fk.train(model=tiny_encoder, output_dir=str(work / name), **QUICK, **settings)
    return {"text": text_model, **{name: work / name for name in runs}}


@pytest.fixture(scope="module")
def predictors(models) -> dict[str, fk.Predictor]:
    return {name: fk.load(path) for name, path in models.items()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def serve_command(model_dir: Path, port: int, *options: str) -> list[str]:
    return [sys.executable, "-m", "finetune_kit.cli", "serve", str(model_dir), "--port", str(port), *options]


@pytest.fixture(scope="module")
def processes(text_model, work):
    """The module's two ``finetune-kit serve`` processes, started together (each spends seconds
    importing torch): the real server, on the text classifier (one torch thread: on a small
    machine shared with other work, a second one only waits for a core), and one given a folder
    that holds no model."""
    port, refused_port = free_port(), free_port()
    (work / "no-model").mkdir()
    with (work / "server.log").open("w") as log:
        server = subprocess.Popen(serve_command(text_model, port, *SERVER_OPTIONS), stdout=log,
                                  stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    refused = subprocess.Popen(serve_command(work / "no-model", refused_port), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        yield {"server": (server, f"http://127.0.0.1:{port}"), "refused": (refused, refused_port)}
    finally:
        for process in (server, refused):
            process.terminate()
            process.communicate(timeout=30)


@pytest.fixture(scope="module")
def server(processes, models, work) -> str:
    """The real server's URL once it answers (the other models train while it starts)."""
    process, url = processes["server"]
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, (work / "server.log").read_text()
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health").status_code == 200:
                return url
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


def same(got, want) -> bool:
    """Equal, numbers to 1e-5: a batch of other lengths pads differently, which may move the last
    bits of a score."""
    if isinstance(want, float) or isinstance(got, float):
        return math.isclose(got, want, abs_tol=1e-5)
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(same(got[k], want[k]) for k in want)
    if isinstance(want, (list, tuple)):
        return isinstance(got, list) and len(got) == len(want) and all(map(same, got, want))
    return got == want


def texts(count: int, seed: int) -> list[str]:
    """``count`` texts of different lengths (2 to 13 words)."""
    return [" ".join(WORDS[(seed * 3 + k + j) % len(WORDS)] for j in range(2 + (seed * 5 + k * 3) % 12))
            for k in range(count)]


# -- the real server -------------------------------------------------------------------------------


def test_two_hundred_concurrent_requests_are_batched_and_answered_as_predict(server, predictors):
    requests = [texts(1 + i % 5, i) for i in range(200)]
    before = httpx.get(f"{server}/info").json()["stats"]

    async def send_all():
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server, limits=limits, timeout=120) as client:
            return await asyncio.gather(*(client.post("/predict", json={"inputs": inputs}) for inputs in requests))

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * 200
    for inputs, response in zip(requests, responses):
        assert same(response.json()["predictions"], predictors["text"].predict(inputs)), inputs
    after = httpx.get(f"{server}/info").json()["stats"]
    assert after["requests"] - before["requests"] == 200
    assert after["inputs"] - before["inputs"] == sum(map(len, requests))
    assert after["batches"] - before["batches"] < 100  # two requests or more per batch on average
    assert after["largest_batch_requests"] > 1
    assert after["fallbacks"] == before["fallbacks"]


def test_a_request_above_the_batch_size_is_one_batch_of_its_own(server, predictors):
    inputs = texts(30, 7)
    response = httpx.post(f"{server}/predict", json={"inputs": inputs})
    assert response.status_code == 200
    assert same(response.json()["predictions"], predictors["text"].predict(inputs))
    assert httpx.get(f"{server}/info").json()["stats"]["largest_batch_inputs"] == 30


def test_health_info_and_api_docs(server, models):
    assert httpx.get(f"{server}/health").json() == {"status": "ok", "model_loaded": True}
    info = httpx.get(f"{server}/info").json()
    manifest = json.loads((models["text"] / "finetune_kit.json").read_text())
    assert info["task"] == "text-classification" and info["labels"] == ["neg", "pos"] and info["model"] == "text"
    assert info["base_model"] == manifest["base_model"] and info["versions"] == manifest["versions"]
    assert info["settings"]["max_length"] == 128 and info["settings"]["text_column"] == "text"
    assert (info["backend"], info["precision"]) == ("torch", "fp32")
    assert info["server"] == {"max_batch_size": 16, "max_wait_ms": 20.0, "max_inputs": 40, "max_input_chars": 200,
                              "max_body_bytes": 4096}
    spec = httpx.get(f"{server}/openapi.json").json()
    operation = spec["paths"]["/predict"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictRequest")
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictResponse")
    assert operation["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    request_schema = spec["components"]["schemas"]["PredictRequest"]
    assert request_schema["required"] == ["inputs"] and request_schema["properties"]["inputs"]["minItems"] == 1
    assert {kind["type"] for kind in request_schema["properties"]["inputs"]["items"]["anyOf"]} == \
        {"string", "array", "object"}
    assert "swagger-ui" in httpx.get(f"{server}/docs").text


def test_the_page_is_self_contained(server):
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script>" in page.text and "<style>" in page.text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)
    assert not re.search(r"@import|<link|<script\s+src", page.text)


def chunks(data: bytes, size: int = 1000):
    for start in range(0, len(data), size):
        yield data[start : start + size]


JSON = {"content-type": "application/json"}
# (request, status, the one-line message), against SERVER_OPTIONS' limits.
BAD_REQUESTS = [
    (dict(content=b'{"inputs": ["good movie"', headers=JSON), 400, r"malformed JSON: .* \(at character 24\)"),
    (dict(content=b"", headers=JSON), 422, r"the body is empty; send a JSON object \{\"inputs\": \[\.\.\.\]\}"),
    (dict(json=["good movie"]), 422, r"the body is not a JSON object; send a JSON object"),
    (dict(content=b'{"inputs": ["good"]}', headers={"content-type": "text/plain"}), 422,
     r"the body is not a JSON object; .*\(Content-Type: application/json\)"),
    (dict(json={"texts": ["good movie"]}), 422, r"'inputs' is missing"),
    (dict(json={"inputs": ["good movie"], "top_k": 3}), 422, r"unknown field 'top_k'"),
    (dict(json={"inputs": "good movie"}), 422, r"'inputs' must be a list of inputs, not str"),
    (dict(json={"inputs": []}), 422, r"'inputs' is empty; give at least one input"),
    (dict(json={"inputs": ["good movie", 3]}), 422,
     r"inputs item 2: an input is a string, a list or an object, not a number"),
    (dict(json={"inputs": ["good", None]}), 422, r"inputs item 2: .* not null"),
    (dict(json={"inputs": ["good", ["good", "movie"]]}), 422,
     r"inputs item 2: text-classification predicts from strings or dicts, not list"),
    (dict(json={"inputs": ["good", "   "]}), 422, r"inputs item 2: column 'text' is empty"),
    (dict(json={"inputs": ["good", {"sentence": "good movie"}]}), 422, r"inputs item 2: column 'text' not found"),
    (dict(json={"inputs": ["good", {"text": 5}]}), 422, r"inputs item 2: column 'text' is not text \(int\)"),
    (dict(json={"inputs": [{"text": "good", "n": 1}, {"text": "bad", "n": "one"}]}), 422,
     r"inputs: the inputs do not make one table \(Could not convert 'one' with type str"),
    (dict(json={"inputs": [[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]}), 422,
     r"inputs item 1: an input may nest lists and objects at most 16 deep"),
    (dict(json={"inputs": ["good"] * 41}), 422, r"too many inputs: 41; a request may hold at most 40"),
    (dict(json={"inputs": ["good", "a" * 201]}), 422, r"inputs item 2: 201 characters; an input may hold at most 200"),
    (dict(json={"inputs": ["good movie " * 18] * 25}), 413, r"the request body is too large; at most 4096 bytes"),
    (dict(content=chunks(json.dumps({"inputs": ["good movie " * 18] * 25}).encode()), headers=JSON), 413,
     r"the request body is too large; at most 4096 bytes"),
    (dict(content=b"[" * 3000 + b"]" * 1000, headers=JSON), 400, r"malformed JSON: "),
]


def test_bad_requests_get_a_4xx_and_one_line(server):
    for request, status, message in BAD_REQUESTS:
        response = httpx.post(f"{server}/predict", **request)
        assert response.status_code == status, (request, response.text)
        body = response.json()
        assert list(body) == ["error"] and "\n" not in body["error"], body
        assert re.match(message, body["error"]), body
    assert httpx.get(f"{server}/nothing-here").json() == {"error": "Not Found"}
    assert httpx.get(f"{server}/predict").status_code == 405
    assert httpx.post(f"{server}/predict", json={"inputs": ["still fine"]}).status_code == 200


def test_a_model_directory_that_does_not_load_stops_the_command(processes):
    process, port = processes["refused"]
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert stderr.count("\n") == 1 and stderr.startswith("error: ")
    assert "not a finetune-kit model directory" in stderr and "Traceback" not in stderr
    assert stdout == "" and not listening(port)


# -- the command's options -------------------------------------------------------------------------

runner = CliRunner()


@pytest.mark.parametrize("option, value", [("--max-batch-size", "0"), ("--max-inputs", "0"),
                                           ("--max-input-chars", "0"), ("--max-body-bytes", "0"),
                                           ("--max-wait-ms", "-1")])
def test_a_bad_limit_is_a_one_line_error(text_model, option, value):
    result = runner.invoke(cli_app, ["serve", str(text_model), option, value])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {option}: {float(value):g} is not allowed; it must be >= " \
                                    f"{0 if option == '--max-wait-ms' else 1}"


def test_without_fastapi_the_command_names_the_extra(text_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    result = runner.invoke(cli_app, ["serve", str(text_model)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert 'uvicorn is not installed): pip install "finetune-kit[serve]"' in result.output


def test_backend_and_precision_go_to_load(monkeypatch):
    from finetune_kit import api

    calls = []
    monkeypatch.setattr(api, "load", lambda model_dir, **settings: calls.append((model_dir, settings)))
    load_predictor("m", 8, precision="bf16", backend="onnxruntime")
    assert calls == [("m", {"batch_size": 8, "precision": "bf16", "backend": "onnxruntime",
                            "trust_remote_code": False})]


def test_precision_is_loaded_and_shown(text_model):
    predictor = load_predictor(str(text_model), 4, precision="bf16")
    with TestClient(create_app(predictor)) as client:
        assert client.get("/info").json()["precision"] == "bf16"
        assert client.post("/predict", json={"inputs": ["good movie"]}).json()["predictions"][0]["label"] in \
            ("neg", "pos")


# -- request shapes of each task, through the app in this process --------------------------------------

TASK_INPUTS = {
    "text": [["good movie"], ["a great day", {"text": "i hate this story"}, "bad"]],
    "pair": [[["good movie", "bad movie"]], [("a great day", "an awful day"), {"text": "fine", "text_pair": "poor"}]],
    "ner": [["the old man saw the dog"], [["the", "big", "dog", "ran"], "a cat and a dog", {"tokens": ["my", "cat"]}]],
    "qa": [[{"question": "who sat", "context": "the cat sat on the mat ."}],
           [["where", "the dog sat on the park ."], {"question": "who sat", "context": "the dog sat on the mat .",
                                                    "id": "q7"}]],
}


@contextlib.asynccontextmanager
async def async_client(app):
    """An httpx client on the app, its lifespan (the batcher) running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve", timeout=60) as client:
            yield client


def post_together(app, requests: list[list]) -> list[httpx.Response]:
    async def send_all():
        async with async_client(app) as client:
            return await asyncio.gather(*(client.post("/predict", json={"inputs": r}) for r in requests))
    return asyncio.run(send_all())


@pytest.mark.parametrize("name", TASK_INPUTS)
def test_each_task_takes_its_input_shapes_and_answers_as_predict(predictors, name):
    predictor = predictors[name]
    app = create_app(predictor, ServeLimits(max_wait_ms=50))
    requests = TASK_INPUTS[name] * 3
    responses = post_together(app, requests)
    for inputs, response in zip(requests, responses):
        assert response.status_code == 200, response.text
        assert same(response.json()["predictions"], predictor.predict(inputs)), (inputs, response.text)
    stats = app.state.batcher.stats
    assert stats.requests == len(requests) and stats.batches < len(requests) and stats.fallbacks == 0


def test_question_ids_stay_those_of_each_request(predictors):
    """Questions without an id are numbered from 0 in each request, and a given id may come in two
    requests: batched together, each request still gets its own ids."""
    requests = [[{"question": "who sat", "context": "the cat sat on the mat ."}] * 2,
                [{"question": "where", "context": "the dog sat on the park ."}, ["who sat", "the dog sat ."]],
                [{"question": "who sat", "context": "the dog sat .", "id": 7}, {"question": "where",
                                                                               "context": "the mat .", "id": 8}],
                [{"id": 7, "question": "where", "context": "the cat sat ."}]]
    app = create_app(predictors["qa"], ServeLimits(max_wait_ms=200))
    got = [r.json()["predictions"] for r in post_together(app, requests)]
    assert [[p["id"] for p in predictions] for predictions in got] == [["0", "1"], ["0", "1"], ["7", "8"], ["7"]]
    for inputs, predictions in zip(requests, got):
        assert same(predictions, predictors["qa"].predict(inputs))
    assert app.state.batcher.stats.largest_batch_requests == 4 and app.state.batcher.stats.fallbacks == 0


def test_requests_of_other_columns_are_not_merged(predictors):
    """``rows_dataset`` takes the first row's columns, and a task may read its layout off them: only
    requests whose first rows have the same columns share a predict call."""
    requests = [["good movie"], [{"text": "bad movie", "source": "web"}], ["fine"], [{"source": "app", "text": "ok"}]]
    app = create_app(predictors["text"], ServeLimits(max_wait_ms=200))
    responses = post_together(app, requests)
    for inputs, response in zip(requests, responses):
        assert same(response.json()["predictions"], predictors["text"].predict(inputs))
    stats = app.state.batcher.stats
    assert (stats.batches, stats.largest_batch_requests, stats.fallbacks) == (2, 2, 0)


def test_a_bad_input_of_a_task_names_the_item(predictors):
    cases = {
        "pair": ([["good", "bad"], "good"], "inputs item 2: pair-classification predicts from (text, text_pair) pairs"),
        "ner": ([["the", "dog"], [1, 2]], "inputs item 2: token-classification predicts from token lists"),
        "qa": ([{"question": "who", "context": "the cat"}, {"question": "who"}],
               "inputs item 2: column 'context' not found"),
    }
    for name, (inputs, message) in cases.items():
        with TestClient(create_app(predictors[name])) as client:
            response = client.post("/predict", json={"inputs": inputs})
        assert response.status_code == 422 and response.json()["error"].startswith(message), response.text


class FailingOn:
    """A predictor whose predict_dataset fails for any dataset holding ``word``, as a request that
    passes validation and still breaks the model would."""

    def __init__(self, predictor, word: str) -> None:
        self.predictor, self.word = predictor, word

    def __getattr__(self, name):
        return getattr(self.predictor, name)

    def predict_dataset(self, raw, source="input"):
        if any(self.word in text for text in raw["text"]):
            raise RuntimeError(f"cannot run\n{self.word}")
        return self.predictor.predict_dataset(raw, source)


def test_a_failing_batch_is_run_again_request_by_request(predictors):
    predictor = predictors["text"]
    requests = [["good movie"], ["bad movie", "poison pill"], ["a great day", "fine"], ["poor plot"]]
    app = create_app(FailingOn(predictor, "poison"), ServeLimits(max_wait_ms=200))
    responses = post_together(app, requests)
    assert [r.status_code for r in responses] == [200, 500, 200, 200]
    assert responses[1].json() == {"error": "internal error: RuntimeError: cannot run poison"}
    for index in (0, 2, 3):
        assert same(responses[index].json()["predictions"], predictor.predict(requests[index]))
    assert app.state.batcher.stats.fallbacks == 1


def test_an_unexpected_error_is_a_500_and_the_server_goes_on(predictors):
    app = create_app(FailingOn(predictors["text"], "poison"))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/predict", json={"inputs": ["poison"]}).status_code == 500
        assert client.post("/predict", json={"inputs": ["good movie"]}).status_code == 200


# -- the page in headless Chromium ---------------------------------------------------------------------

CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
                None)


@contextlib.contextmanager
def served_in_thread(app):
    """The app over real HTTP from a thread of this process (uvicorn), for a browser to open."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def page_dom(url: str, **fields: str) -> str:
    """The page's DOM once it has filled its form from the query string and shown the prediction."""
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                             "--dump-dom", f"{url}/?{urlencode(fields)}"], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found")
def test_the_page_shows_the_label_of_a_text(server, predictors):
    text = "i love this story"
    [expected] = predictors["text"].predict([text])
    dom = page_dom(server, text=text)
    assert f'<span class="label">{expected["label"]}</span>' in dom, dom[-3000:]
    assert f"{expected['score']:.3f}" in dom and 'id="error"' not in dom


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found")
def test_the_page_highlights_entities_and_answers(predictors):
    sentence = "the old man saw the big dog"
    [tagged] = predictors["ner"].predict([sentence])
    question = {"question": "where", "context": "the dog sat on the park ."}
    [answered] = predictors["qa"].predict([question])
    with served_in_thread(create_app(predictors["ner"])) as url:
        dom = page_dom(url, text=sentence)
    for entity in tagged["entities"]:
        assert f'data-type="{entity["type"]}"' in dom and f"<td>{entity['text']}</td>" in dom
    count = len(tagged["entities"])
    assert f"{count} {'entity' if count == 1 else 'entities'}" in dom and 'id="error"' not in dom
    with served_in_thread(create_app(predictors["qa"])) as url:
        dom = page_dom(url, **question)
    assert f'data-label="{answered["answer"]}"' in dom and 'id="error"' not in dom
