"""The HTTP layer (FastAPI): OpenAI's `POST /v1/audio/speech`, `GET /healthz`, `GET /metrics`.

Thin, as vLLM's: a handler validates the request and hands the text to the service's batcher
(`service.py` -> `fastspeech/batcher.py` -> the router's engines); errors are OpenAI-style JSON with
a 4xx/503 status, never a 500 with a stack trace. wav and pcm stream sentence by sentence; a client
that disconnects cancels its remaining work; `stream_format` "sse" wraps the same chunks in OpenAI's
server-sent events (`_sse`). `create_app(cfg)` builds the engines in the background at start-up
(`/healthz` says "warming up" until they are warm); `create_app(service=...)` serves an existing
service (tests). Uvicorn and Ray Serve (`ray.py`) serve this same app.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from fastspeech.batcher import QueueFull, Stream
from fastspeech.errors import EngineError, TextError
from fastspeech.router import Part, SynthesisFailed
from fastspeech.serve import audio
from fastspeech.serve.protocol import (
    SEND_JSON,
    SPEED_MAX,
    SPEED_MIN,
    STREAM_FORMATS,
    APIError,
    ErrorInfo,
    Health,
    ModelCard,
    ModelList,
    SpeechAudioDelta,
    SpeechAudioDone,
    SpeechRequest,
    SpeechUsage,
    StreamError,
    invalid_request,
)
from fastspeech.serve.service import Service

log = logging.getLogger(__name__)

_SERVER = {"X-Server-Pid": str(os.getpid())}  # which process (Ray replica) answered
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **_SERVER}
SPEECH_ROUTE = "/v1/audio/speech"
MODEL_IDS = ("fastspeech", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")  # accepted `model` names
# Request body bytes allowed per character of serve.max_chars (a JSON \uXXXX escape is 6), plus room
# for the other fields: a larger body gets its 413 before it is read whole.
BODY_BYTES_PER_CHAR, BODY_BYTES_EXTRA = 6, 16384


class _BodyLimit:
    """ASGI middleware: a request body over `limit()` bytes is refused with a 413 as soon as that is
    known, from its Content-Length before any of it is read, or, sent in chunks, once the bytes read
    pass the limit. The 413 is raised where the route reads the body, so it is answered like
    Starlette's own errors (`http_error`: OpenAI's JSON, counted in the metrics)."""

    def __init__(self, app, limit):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit()
        declared = dict(scope["headers"]).get(b"content-length", b"")
        chunked = not declared.isdigit()  # no Content-Length: count the chunks as they come
        seen = 0 if chunked else int(declared)

        async def counted():
            nonlocal seen
            if seen <= limit:
                message = await receive()
                if chunked and message["type"] == "http.request":
                    seen += len(message.get("body", b""))
            if seen > limit:
                raise StarletteHTTPException(413, f"{seen} bytes or more")
            return message

        await self.app(scope, counted, send)


def create_app(cfg=None, service: Service | None = None) -> FastAPI:
    """The app. With `service` it serves that (started here, closed at shutdown); with `cfg`, it
    builds `Service.from_config(cfg)` in a thread at start-up, answering 503 until it is warm."""
    if (cfg is None) == (service is None):
        raise ValueError("give create_app either cfg or service")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.service = service
        app.state.error = None
        task = None
        if service is not None:
            service.start()
        else:
            task = asyncio.create_task(_build(app, cfg))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            if app.state.service is not None:
                app.state.service.close()

    app = FastAPI(title="fastspeech-trt", summary="OpenAI-compatible speech API", lifespan=lifespan)
    app.state.service = None

    def max_chars() -> int:
        return app.state.service.max_chars if app.state.service is not None else int(cfg.serve.max_chars)

    app.add_middleware(_BodyLimit, limit=lambda: BODY_BYTES_PER_CHAR * max_chars() + BODY_BYTES_EXTRA)
    origins = list(service.cors_origins if service is not None else cfg.serve.get("cors_origins") or [])
    if origins:  # web pages on these origins may call the API from the browser (preflight included)
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"], allow_headers=["*"]
        )

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        _count(request, "400")
        error = invalid_request(exc.errors(), request.headers.get("content-type", ""))
        return JSONResponse(error.body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's own errors (no route, wrong method, an unreadable body) as OpenAI's JSON."""
        if request.url.path == SPEECH_ROUTE:
            _count(request, str(exc.status_code))
        where = f"{request.method} {request.url.path}"
        message = {
            404: f"no route {where}; this server has POST /v1/audio/speech, GET /v1/models, /healthz, /metrics",
            405: f"{where} is not allowed; use {(exc.headers or {}).get('Allow', 'another method')}",
            400: f"the request body could not be read ({exc.detail}); {SEND_JSON}",
            413: f"the request body is too large ({exc.detail}) for this server's input limit of "
            f"{max_chars()} characters (serve.max_chars); send the text in several requests",
        }.get(exc.status_code, str(exc.detail))
        code = {
            404: "not_found",
            405: "method_not_allowed",
            400: "invalid_body",
            413: "request_too_large",
        }.get(exc.status_code)
        body = APIError(exc.status_code, message, code=code).body()
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(SynthesisFailed)
    async def synthesis_failed(request: Request, exc: SynthesisFailed) -> JSONResponse:
        log.error("%s", exc)
        _count(request, "500")
        return JSONResponse(APIError(500, str(exc), type="server_error").body(), status_code=500)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        body = APIError(500, "internal error; see the server log", type="server_error").body()
        return JSONResponse(body, status_code=500)

    @app.api_route("/healthz", methods=["GET", "HEAD"])  # HEAD: load balancers' checks
    async def healthz(request: Request) -> JSONResponse:
        svc = request.app.state.service
        if svc is None:
            error = request.app.state.error
            body = Health(status="failed" if error else "warming up", detail=error)
            return JSONResponse(body.model_dump(), status_code=503)
        return JSONResponse(Health(status="ready", voices=list(svc.voices)).model_dump())

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        svc = _service(request)
        svc.metrics.refresh(svc.batcher)
        return Response(svc.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=m) for m in MODEL_IDS])

    @app.post(SPEECH_ROUTE)
    async def speech(body: SpeechRequest, request: Request) -> Response:
        t0 = time.perf_counter()
        svc = _service(request)
        try:
            voice, alpha, fmt = _check(svc, body)
            try:
                stream = svc.submit(body.input, voice, alpha)
            except QueueFull as exc:
                raise APIError(
                    503,
                    str(exc),
                    type="server_busy",
                    code="queue_full",
                    headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
                ) from None
            except TextError as exc:
                raise APIError(
                    400, f"input: {_for_client(exc)}", param="input", code="invalid_text"
                ) from None
            except EngineError as exc:
                raise APIError(400, str(exc), param="input", code="input_too_long") from None
        except APIError as exc:
            svc.metrics.requests.labels(str(exc.status)).inc()
            raise
        sse, tally = body.stream_format == "sse", _Tally()
        if body.stream and fmt in audio.STREAMED:
            first = await _first(svc, stream, t0)  # errors of the first piece still get a status
            chunks = _streamed(svc, voice, stream, first, fmt, t0, tally)
            if sse:
                return StreamingResponse(
                    _sse(chunks, tally), media_type="text/event-stream", headers=_SSE_HEADERS
                )
            return _AudioStream(
                chunks,
                tally,
                media_type=audio.MEDIA_TYPES[fmt],
                headers={"X-Accel-Buffering": "no", **_SERVER},
            )
        try:
            wavs = await _whole(svc, voice, stream, request, tally)
        except SynthesisFailed:
            raise
        except (TextError, EngineError) as exc:
            svc.metrics.requests.labels("400").inc()
            raise APIError(400, _for_client(exc), param="input") from None
        if wavs is None:  # the client left before its audio was ready: its work is cancelled
            svc.metrics.requests.labels("499").inc()
            return Response(status_code=499)
        wav = np.concatenate(wavs) if wavs else np.zeros(0, np.int16)
        data = await asyncio.to_thread(audio.encode_whole, wav, fmt, svc.pcm_rate)
        svc.metrics.requests.labels("200").inc()
        elapsed = time.perf_counter() - t0
        svc.metrics.ttfb.observe(elapsed)
        svc.metrics.latency.observe(elapsed)
        if sse:  # one delta: the whole file
            return StreamingResponse(
                _sse(_one(data), tally), media_type="text/event-stream", headers=_SSE_HEADERS
            )
        return Response(data, media_type=audio.MEDIA_TYPES[fmt], headers=_SERVER)

    return app


def worker_app() -> FastAPI:
    """`create_app` in one of uvicorn's worker processes (`serve.workers` > 1), for the config the
    parent put in the environment (`fastspeech.serve.CONFIG_ENV`)."""
    import json

    from omegaconf import OmegaConf

    from fastspeech.serve import CONFIG_ENV

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return create_app(OmegaConf.create(json.loads(os.environ[CONFIG_ENV])))


async def _build(app: FastAPI, cfg) -> None:
    try:
        service = await asyncio.to_thread(Service.from_config, cfg)
    except Exception as exc:
        log.exception("the server could not start its engines")
        app.state.error = str(exc)
        return
    service.start()
    app.state.service = service
    log.info("ready: voices %s", ", ".join(service.voices))


def _count(request: Request, status: str) -> None:
    svc = request.app.state.service
    if svc is not None:
        svc.metrics.requests.labels(status).inc()


def _service(request: Request) -> Service:
    svc = request.app.state.service
    if svc is None:
        detail = request.app.state.error
        if detail:
            raise APIError(503, f"the server failed to start: {detail}", type="server_error")
        raise APIError(
            503,
            "the server is warming up its engines; try again shortly",
            type="server_busy",
            headers={"Retry-After": "5"},
        )
    return svc


def _check(svc: Service, body: SpeechRequest) -> tuple[str, float, str]:
    """-> (voice, alpha, response format), or the APIError naming what is wrong."""
    if not body.input or not body.input.strip():
        raise APIError(400, "input is empty; give text to speak", param="input", code="empty_input")
    if len(body.input) > svc.max_chars:  # 400, as OpenAI's over-long input (openai.BadRequestError)
        raise APIError(
            400,
            f"input is {len(body.input)} characters, more than this server takes ({svc.max_chars}, "
            "serve.max_chars); send it in several requests",
            param="input",
            code="input_too_long",
        )
    voice = svc.default_voice if body.voice is None else getattr(body.voice, "id", body.voice)
    if voice not in svc.voices:
        raise APIError(
            400,
            f"unknown voice {voice!r}; this server has: {', '.join(svc.voices)}",
            param="voice",
            code="unknown_voice",
        )
    fmt = body.response_format.lower()
    supported = audio.supported_formats()
    if fmt not in supported:
        raise APIError(
            400,
            f"response_format {body.response_format!r} is not supported here; use one of {', '.join(supported)}",
            param="response_format",
            code="unsupported_format",
        )
    if not SPEED_MIN <= body.speed <= SPEED_MAX:
        raise APIError(
            400, f"speed {body.speed} is out of range; use {SPEED_MIN} to {SPEED_MAX}", param="speed"
        )
    if body.stream_format not in (None, *STREAM_FORMATS):
        raise APIError(
            400,
            f"stream_format {body.stream_format!r} is not supported; use one of {', '.join(STREAM_FORMATS)}",
            param="stream_format",
        )
    return voice, 1.0 / body.speed, fmt


async def _first(svc: Service, stream: Stream, t0: float):
    """The first piece (or None for no pieces); its errors become 400s before the response starts."""
    parts = stream.parts()
    try:
        first = await parts.__anext__()
    except StopAsyncIteration:
        return parts, None
    except SynthesisFailed:
        raise
    except (TextError, EngineError) as exc:
        svc.metrics.requests.labels("400").inc()
        raise APIError(400, _for_client(exc), param="input") from None
    except BaseException:
        stream.cancel()
        raise
    return parts, first


def _for_client(exc: Exception) -> str:
    """What a client is told of a failed request: a `TextError` without the operator's fix (its
    `for_client`, e.g. no "set on_unknown=drop"), any other error as it reads."""
    return exc.for_client if isinstance(exc, TextError) else str(exc)


class _Tally:
    """What a request's pieces add up to, for the "sse" stream's last event: its `SpeechUsage` (input
    tokens: the text symbols fed to the model, Ti summed over pieces; output tokens: the mel frames
    generated, To summed) and the error that cut the stream short, if one did."""

    def __init__(self) -> None:
        self.symbols, self.frames = 0, 0
        self.error: Exception | None = None

    def add(self, part: Part) -> None:
        self.symbols += len(part.durations)  # one duration per token id
        self.frames += part.frames

    def usage(self) -> SpeechUsage:
        return SpeechUsage(
            input_tokens=self.symbols, output_tokens=self.frames, total_tokens=self.symbols + self.frames
        )


async def _whole(svc: Service, voice: str, stream: Stream, request: Request, tally: _Tally) -> list | None:
    """Every piece's wav for a response sent whole (`stream: false`, mp3, flac), or None when the client
    disconnects first: then its queued sentences leave the queues and its running call's results are
    dropped (`Stream.cancel`), as for a client that leaves a stream."""

    async def collect() -> list:
        wavs = []
        async for part in stream.parts():
            tally.add(part)
            wavs.append(svc.voices[voice].wav(part))
        return wavs

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    work, gone = asyncio.ensure_future(collect()), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():
            stream.cancel()
            work.cancel()
    return work.result() if work.done() and not work.cancelled() else None


class _AudioStream(StreamingResponse):
    """A streamed audio body that is cut off, not ended, when a later sentence fails: its status went
    out with the first sentence, so the only way left to tell the client is a response it can see
    is incomplete (the connection closes before the last chunk; clients raise an error on it), never
    short audio that looks whole. SSE tells the same failure with an `error` event instead."""

    def __init__(self, content, tally: _Tally, **kwargs):
        super().__init__(content, **kwargs)
        self.tally = tally

    async def stream_response(self, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if self.tally.error is None:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _sse(chunks: AsyncIterator[bytes], tally: _Tally) -> AsyncIterator[bytes]:
    """OpenAI's speech events around a body's chunks: `data: <json>` and a blank line each, one
    `speech.audio.delta` (the chunk in base64) per chunk, then `speech.audio.done` with the usage,
    or an `error` event when a piece failed mid-stream. Closing this closes `chunks` (client gone)."""
    async with aclosing(chunks):
        async for chunk in chunks:
            if chunk:
                yield _event(SpeechAudioDelta(audio=base64.b64encode(chunk).decode("ascii")))
    if tally.error is None:
        yield _event(SpeechAudioDone(usage=tally.usage()))
    else:
        kind = "server_error" if isinstance(tally.error, SynthesisFailed) else "invalid_request_error"
        yield _event(StreamError(error=ErrorInfo(message=_for_client(tally.error), type=kind)))


def _event(body: BaseModel) -> bytes:
    return b"data: " + body.model_dump_json().encode() + b"\n\n"


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _streamed(
    svc: Service, voice: str, stream: Stream, first, fmt: str, t0: float, tally: _Tally
) -> AsyncIterator[bytes]:
    """The streamed body: header (wav), then each piece's pcm as it is synthesized (counted in `tally`)."""
    parts, part = first
    status = "499"  # the client went away, unless we get to the end
    try:
        head = audio.wav_header() if fmt == "wav" else b""
        out = audio.Pcm(svc.pcm_rate if fmt == "pcm" else None)
        sent = False
        while part is not None:
            tally.add(part)
            pcm = out.piece(svc.voices[voice].wav(part), head)
            if not sent:
                svc.metrics.ttfb.observe(time.perf_counter() - t0)
                sent = True
            yield pcm
            head = b""
            part = await anext(parts, None)
        if not sent and head:
            yield head
        if tail := out.end():
            yield tail
        status = "200"
    except (TextError, EngineError) as exc:  # a later piece failed: the status has gone out already
        log.warning("request failed mid-stream: %s", exc)
        status = "500" if isinstance(exc, SynthesisFailed) else "400"
        tally.error = exc
    finally:
        stream.cancel()
        await parts.aclose()
        svc.metrics.requests.labels(status).inc()
        svc.metrics.latency.observe(time.perf_counter() - t0)
