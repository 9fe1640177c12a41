"""The HTTP API's request and response bodies (OpenAI's `POST /v1/audio/speech`) and its errors.

Errors come back as OpenAI's JSON, `{"error": {"message", "type", "param", "code"}}`, with a 4xx/503
status; a message names the input at fault and the fix. Nothing else here: handlers live in `app.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SPEED_MIN, SPEED_MAX = 0.25, 4.0
STREAM_FORMATS = ("audio", "sse")


class VoiceRef(BaseModel):
    """OpenAI's other form of `voice`: an object naming a custom voice by its id."""

    model_config = ConfigDict(extra="ignore", strict=True)

    id: str


class SpeechRequest(BaseModel):
    """OpenAI's speech request. `speed` s is the model's alpha = 1 / s (durations x alpha).

    `stream` (ours, default true): wav and pcm go out sentence by sentence as each is synthesized;
    false waits for the whole text (a wav then has its exact sizes in the header). flac and mp3 are
    always sent whole. `stream_format` "sse" sends the same bytes as OpenAI's server-sent events:
    one `SpeechAudioDelta` per chunk the "audio" response would send (with `stream` false, or for
    flac/mp3, one for the whole file), then one `SpeechAudioDone`. `instructions` is accepted and
    ignored (FastSpeech takes no style prompt). `voice` is a voice's name or, as OpenAI's SDK also
    sends it, `{"id": name}`.

    Strict JSON types, as OpenAI's: `"speed": "2"` or `true`, `"stream": "yes"` or `1` are 400s
    naming the field, never read as something else (an int is a number for `speed`).
    """

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = "fastspeech"
    input: str
    voice: str | VoiceRef | None = None  # a name, or {"id": name}
    response_format: str = "wav"
    speed: float = 1.0
    instructions: str | None = None
    stream_format: str | None = Field(default=None, description="'audio' (default) or 'sse'")
    stream: bool = True


class SpeechUsage(BaseModel):
    """OpenAI's token usage, in FastSpeech's units: `input_tokens` the text symbols fed to the model
    (the token ids of all the request's sentences), `output_tokens` the mel frames it generated
    (256 audio samples each)."""

    input_tokens: int
    output_tokens: int
    total_tokens: int


class SpeechAudioDelta(BaseModel):
    """One server-sent event of `stream_format` "sse": a chunk of the audio, base64-encoded."""

    type: Literal["speech.audio.delta"] = "speech.audio.delta"
    audio: str


class SpeechAudioDone(BaseModel):
    """The last event of a complete "sse" stream (a stream cut short by a failure ends with an
    `error` event instead)."""

    type: Literal["speech.audio.done"] = "speech.audio.done"
    usage: SpeechUsage


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class StreamError(BaseModel):
    """The last event of an "sse" stream that a piece's failure cut short (its status went out
    already): OpenAI's error object as an event."""

    type: Literal["error"] = "error"
    error: ErrorInfo


class APIError(Exception):
    """An error the client can fix (or retry): its HTTP status and OpenAI-style body."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        info = ErrorInfo(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=info).model_dump()


SEND_JSON = 'send a JSON object with Content-Type: application/json, e.g. {"input": "Hello there."}'


def invalid_request(errors: list[dict], content_type: str) -> APIError:
    """FastAPI's validation errors of a speech request -> one 400 naming each field at fault, or,
    for a body that is not a JSON object at all (not JSON, empty, a list, sent as text/plain),
    what it is and how to send one."""
    whole = next((e for e in errors if e["type"] == "json_invalid" or tuple(e["loc"]) == ("body",)), None)
    if whole is None:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'] if x != 'body') or 'body'}: {e['msg']}" for e in errors
        )
        return APIError(400, f"invalid request: {problems}", param=str(errors[0]["loc"][-1]))
    media = content_type.split(";")[0].strip().lower()
    maintype, _, subtype = media.partition("/")
    if not (
        maintype == "application" and (subtype == "json" or subtype.endswith("+json"))
    ):  # as FastAPI reads
        what = f"sent as {content_type}" if content_type else "sent without a Content-Type"
    elif whole["type"] == "json_invalid":
        what = f"not valid JSON ({whole.get('ctx', {}).get('error', 'decode error')})"
    elif whole["type"] == "missing":
        what = "empty"
    else:
        what = "JSON but not an object"
    return APIError(400, f"the request body is {what}; {SEND_JSON}", code="invalid_body")


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    owned_by: str = "fastspeech-trt"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: str  # "ready" | "warming up"
    voices: list[str] = []
    detail: str | None = None
