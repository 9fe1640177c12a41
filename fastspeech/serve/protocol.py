"""The HTTP API's request and response bodies (OpenAI's `POST /v1/audio/speech`) and its errors.

Errors come back as OpenAI's JSON, `{"error": {"message", "type", "param", "code"}}`, with a 4xx/503
status; a message names the input at fault and the fix. Nothing else here: handlers live in `app.py`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SPEED_MIN, SPEED_MAX = 0.25, 4.0


class SpeechRequest(BaseModel):
    """OpenAI's speech request. `speed` s is the model's alpha = 1 / s (durations x alpha).

    `stream` (ours, default true): wav and pcm go out sentence by sentence as each is synthesized;
    false waits for the whole text (a wav then has its exact sizes in the header). flac and mp3 are
    always sent whole. `instructions` is accepted and ignored (FastSpeech takes no style prompt).
    """

    model_config = ConfigDict(extra="ignore")

    model: str = "fastspeech"
    input: str
    voice: str | None = None
    response_format: str = "wav"
    speed: float = 1.0
    instructions: str | None = None
    stream_format: str | None = Field(default=None, description="'audio' only (no server-sent events)")
    stream: bool = True


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
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
