"""``finetune-kit serve``: a trained model behind HTTP (FastAPI), requests micro-batched.

``POST /predict`` takes ``{"inputs": [...]}`` in the shapes ``Predictor.predict`` takes and answers
``{"predictions": [...]}``, what ``Predictor.predict`` returns for them. ``GET /health``,
``GET /info``, the OpenAPI pages (``/docs``, ``/openapi.json``) and a page to try the model by hand
(``GET /``). Every error is ``{"error": "one line"}`` with a 4xx status (500 for a fault of the
server, which keeps running).
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib.resources import files
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.exceptions import HTTPException

from .batcher import MicroBatcher
from .task import DataError, TaskError

PAGE = "serve_page.html"


class RequestError(ValueError):
    """A request over one of the server's limits."""


@dataclass(frozen=True)
class ServeLimits:
    """The server's batching settings and the limits of a request."""

    # The most inputs one batch (one predict call) gathers from concurrent requests.
    max_batch_size: int = 64
    # How long a batch waits for more requests after its first one, in milliseconds.
    max_wait_ms: float = 5.0
    # The most inputs one request may hold.
    max_inputs: int = 256
    # The most characters one input may hold (all its strings together).
    max_input_chars: int = 100_000
    # The most bytes a request body may hold.
    max_body_bytes: int = 4 * 1024 * 1024


class BodyLimit:
    """ASGI middleware: a request body of more than ``max_bytes`` (as its Content-Length says, or
    as it arrives) ends the request with 413 before any more of it is read."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        received = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise HTTPException(413)
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413)
            return message

        await self.app(scope, limited_receive, send)


# The deepest nesting of lists and objects an input may have (CommonsenseQA's choices have 4).
MAX_DEPTH = 16


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (without recursion: a body may nest deeper
    than Python's recursion limit)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _one_input(value: Any) -> Any:
    if not isinstance(value, (str, list, dict)):
        kind = "null" if value is None else "a number" if isinstance(value, (int, float)) else type(value).__name__
        raise ValueError(f"an input is a string, a list or an object, not {kind}")
    if _depth(value) > MAX_DEPTH:
        raise ValueError(f"an input may nest lists and objects at most {MAX_DEPTH} deep")
    return value


INPUT_SCHEMA = {
    "anyOf": [
        {"type": "string", "description": "a text; for word-level tasks, words split on white space"},
        {"type": "array", "description": "[text, text_pair] for pair tasks, a list of words for word-level "
                                         "tasks, [question, [choices]] for multiple choice"},
        {"type": "object", "description": "the task's columns, e.g. {\"question\": ..., \"context\": ...} for "
                                          "question answering"},
    ],
}
Input = Annotated[Any, AfterValidator(_one_input), WithJsonSchema(INPUT_SCHEMA)]


class PredictRequest(BaseModel):
    """The inputs to predict for, in the shapes ``Predictor.predict`` takes."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"inputs": ["a text to classify", "another one"]},
        {"inputs": [["a premise", "a hypothesis"]]},
        {"inputs": [{"question": "Who sat?", "context": "The cat sat on the mat."}]},
    ]})

    inputs: list[Input] = Field(min_length=1, description="The inputs, one prediction each, in this order.")


class PredictResponse(BaseModel):
    predictions: list[Any] = Field(description="One prediction per input, in input order, as "
                                               "Predictor.predict returns them.")


class ErrorResponse(BaseModel):
    error: str = Field(description="What was wrong, in one line.")


ERRORS = {status: {"model": ErrorResponse} for status in (400, 413, 422, 500)}


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status)


def _place(loc: tuple[Any, ...]) -> str:
    """A validation error's location in the body: ``body``, ``inputs``, ``inputs item 3``."""
    path = [part for part in loc if part != "body"]
    if len(path) >= 2 and path[0] == "inputs" and isinstance(path[1], int):
        return f"inputs item {path[1] + 1}"
    return ".".join(map(str, path)) or "body"


def validation_message(errors: list[dict[str, Any]]) -> tuple[int, str]:
    """The status and one-line message of FastAPI's validation errors (the first of them)."""
    first, kind = errors[0], errors[0]["type"]
    place = _place(first["loc"])
    usage = 'send a JSON object {"inputs": [...]}'
    if kind == "json_invalid":
        return 400, f"malformed JSON: {first.get('ctx', {}).get('error', 'cannot be parsed')} " \
                    f"(at character {first['loc'][-1]})"
    if place == "body" and kind == "missing":
        return 422, f"the body is empty; {usage}"
    if place == "body":
        return 422, f"the body is not a JSON object; {usage} (Content-Type: application/json)"
    if kind == "missing":
        return 422, f"'{place}' is missing; {usage}"
    if kind == "extra_forbidden":
        return 422, f"unknown field '{place}'; {usage}"
    if place == "inputs" and kind == "too_short":
        return 422, "'inputs' is empty; give at least one input"
    if place == "inputs" and kind == "list_type":
        return 422, f"'inputs' must be a list of inputs, not {type(first.get('input')).__name__}; {usage}"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return 422, f"{place}: {message}{more}"


def input_chars(value: Any) -> int:
    """The characters of an input: its strings (object keys included) added up."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(len(str(k)) + input_chars(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(input_chars(v) for v in value)
    return 0


def check_limits(inputs: list[Any], limits: ServeLimits) -> None:
    if len(inputs) > limits.max_inputs:
        raise RequestError(f"too many inputs: {len(inputs)}; a request may hold at most {limits.max_inputs} "
                        f"(send them in several requests)")
    for number, value in enumerate(inputs, start=1):
        chars = input_chars(value)
        if chars > limits.max_input_chars:
            raise RequestError(f"inputs item {number}: {chars} characters; an input may hold at most "
                            f"{limits.max_input_chars}")


def _plain(value: Any) -> Any:
    """JSON for the numpy numbers and arrays a plugin task's predictions may hold."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def model_info(predictor: Any, limits: ServeLimits, name: str | None) -> dict[str, Any]:
    manifest = predictor.manifest
    return {
        "task": manifest.task,
        "labels": predictor.labels,
        "model": name or predictor.model_dir.name,
        "base_model": manifest.base_model,
        "versions": manifest.versions,
        "settings": asdict(predictor.task.settings),
        "task_state": manifest.task_state,
        "backend": predictor.backend,
        "precision": predictor.precision,
        "server": asdict(limits),
    }


def create_app(predictor: Any, limits: ServeLimits = ServeLimits(), name: str | None = None) -> FastAPI:
    """The app for a loaded predictor (``finetune_kit.load``); ``name``: the model's, as /info and the
    page show it (default: its directory's)."""
    from . import __version__

    batcher = MicroBatcher(predictor, limits.max_batch_size, limits.max_wait_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title=f"finetune-kit: {predictor.manifest.task}", version=__version__, lifespan=lifespan,
                  description=f"Predictions of the {predictor.manifest.task} model "
                              f"`{name or predictor.model_dir.name}` (fine-tuned from {predictor.manifest.base_model}).")
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.state.batcher = batcher
    info = model_info(predictor, limits, name)
    page_html = files(__package__).joinpath(PAGE).read_text(encoding="utf-8")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(*validation_message(list(exc.errors())))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail
        if exc.status_code == 413:
            message = f"the request body is too large; at most {limits.max_body_bytes} bytes"
        elif exc.status_code == 400:  # FastAPI could not read the body (e.g. JSON nested too deep to parse)
            message = f"malformed JSON: {exc.detail}"
        return error_response(exc.status_code, message)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS,
              summary="Predict for a list of inputs")
    async def predict(request: PredictRequest) -> Response:
        try:
            check_limits(request.inputs, limits)
            predictions = await batcher.predict(request.inputs)
        except (RequestError, TaskError, DataError) as exc:
            return error_response(422, str(exc))
        body = json.dumps({"predictions": predictions}, ensure_ascii=False, allow_nan=False, default=_plain)
        return Response(body, media_type="application/json")

    @app.get("/health", summary="Whether the server is up and its model loaded")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model_loaded": True}

    @app.get("/info", summary="The model, its settings, the server's batching settings and limits, and what "
                             "it has done (stats)")
    async def describe() -> dict[str, Any]:
        return {**info, "stats": asdict(batcher.stats)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)

    return app


def load_predictor(model_dir: str, batch_size: int, precision: str = "fp32", backend: str = "auto",
                   trust_remote_code: bool = False) -> Any:
    """``finetune_kit.load`` with the server's settings."""
    from .api import load

    return load(model_dir, batch_size=batch_size, precision=precision, backend=backend,
                trust_remote_code=trust_remote_code)
