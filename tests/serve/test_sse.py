"""`stream_format: "sse"`: OpenAI's server-sent events for speech. The framing, the decoded deltas
byte for byte against the plain ("audio") response, the usage against the offline router, errors
before the stream (JSON, 4xx) and during it (an `error` event, no done), the official `openai`
client. CPU: tiny random model, eager engines, a stand-in vocoder (conftest.py)."""

from __future__ import annotations

import base64
import json

import pytest

pytest.importorskip("fastapi", reason='needs the serve extra: pip install -e ".[serve]"')
pytest.importorskip("httpx", reason='needs httpx: pip install -e ".[dev]"')
import httpx

TEXT = "One, 2, three. Four five six? Seven eight nine ten, 11 twelve."  # 66 symbols, 62 characters


def events(body: bytes) -> list[dict]:
    """The events of an SSE body, each exactly `data: <json>` and a blank line."""
    assert body.endswith(b"\n\n"), body[-80:]
    out = []
    for frame in body[:-2].split(b"\n\n"):
        assert frame.startswith(b"data: ") and b"\n" not in frame, frame[:80]
        out.append(json.loads(frame[len(b"data: ") :]))
    return out


def audio_and_usage(evts: list[dict]) -> tuple[list[bytes], dict]:
    """(each delta's decoded bytes, the usage); the order must be one or more deltas, then one done."""
    *deltas, done = evts
    assert deltas and all(e.keys() == {"type", "audio"} for e in deltas), [e["type"] for e in evts]
    assert all(e["type"] == "speech.audio.delta" for e in deltas), [e["type"] for e in evts]
    assert done.keys() == {"type", "usage"} and done["type"] == "speech.audio.done", done
    return [base64.b64decode(e["audio"], validate=True) for e in deltas], done["usage"]


def routed(offline, text: str, speed: float = 1.0):
    (r,), _ = offline([text], alpha=1 / speed, sentences=True)
    return r


@pytest.mark.parametrize(
    "fmt, stream",
    [("wav", True), ("pcm", True), ("wav", False), ("pcm", False), ("flac", True), ("mp3", True)],
)
def test_deltas_are_the_plain_responses_bytes_and_usage_counts_symbols_and_frames(
    server, offline, fmt, stream
):
    from fastspeech.serve.audio import supported_formats

    if fmt not in supported_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    body = {"input": TEXT, "response_format": fmt, "stream": stream, "speed": 1.25}
    plain = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=60)
    sse = httpx.post(f"{server.url}/v1/audio/speech", json={**body, "stream_format": "sse"}, timeout=60)
    assert plain.status_code == sse.status_code == 200, sse.text
    assert sse.headers["content-type"].startswith("text/event-stream")
    chunks, usage = audio_and_usage(events(sse.content))
    assert b"".join(chunks) == plain.content and len(plain.content) > 1000
    expected = routed(offline, TEXT, speed=1.25)
    sentence_by_sentence = stream and fmt in ("wav", "pcm")
    assert len(chunks) == (len(expected.pieces) if sentence_by_sentence else 1) and len(expected.pieces) == 3
    assert usage == {
        "input_tokens": len(expected.durations),  # the text symbols of all three sentences
        "output_tokens": expected.frames,  # mel frames
        "total_tokens": len(expected.durations) + expected.frames,
    }
    assert all(type(n) is int and n > 0 for n in usage.values())
    if fmt == "pcm":
        assert len(plain.content) == 2 * 256 * usage["output_tokens"]


BAD = [
    ({"input": ""}, 400, "input is empty"),
    ({"input": "Snow \u2603 today."}, 400, "'\u2603'"),
    ({"input": "word " * 120}, 400, "more than this server takes (500"),
    ({"input": "Hi.", "voice": "alloy"}, 400, "unknown voice 'alloy'"),
    ({"input": "Hi.", "response_format": "aac"}, 400, "use one of wav, pcm, flac"),
    ({"input": "Hi.", "stream": False, "speed": 9}, 400, "speed 9.0 is out of range"),
]


@pytest.mark.parametrize("body, status, message", BAD, ids=[m for _, _, m in BAD])
def test_bad_input_with_sse_is_a_json_error_before_any_event(server, body, status, message):
    r = httpx.post(f"{server.url}/v1/audio/speech", json={**body, "stream_format": "sse"})
    assert r.status_code == status and r.headers["content-type"] == "application/json", r.text
    error = r.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert "data:" not in r.text and "Traceback" not in r.text


@pytest.mark.parametrize("stream_format", ["ogg", "SSE", ""])
def test_unknown_stream_format_is_a_400_naming_audio_and_sse(server, stream_format):
    r = httpx.post(f"{server.url}/v1/audio/speech", json={"input": "Hi.", "stream_format": stream_format})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "stream_format"
    assert error["message"] == f"stream_format {stream_format!r} is not supported; use one of audio, sse"


def test_openai_client_reads_the_events(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    args = {"model": "tts-1", "voice": "demo", "input": TEXT, "response_format": "pcm"}
    plain = client.audio.speech.create(**args).content
    with client.audio.speech.with_streaming_response.create(**args, stream_format="sse") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = list(response.iter_lines())
    data = [line.removeprefix("data: ") for line in lines if line]
    assert len(data) == len(lines) - lines.count("") and all(
        line.startswith("data: ") for line in lines if line
    )
    chunks, usage = audio_and_usage([json.loads(d) for d in data])
    assert (
        b"".join(chunks) == plain and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    )


def test_a_failure_mid_stream_ends_with_an_error_event_not_done(poisoned_server):
    """The first sentence (27 symbols) runs on another engine than the poisoned second (13), in an
    earlier call: its delta goes out, then the failure can only be told as an event."""
    body = {
        "input": "A fine first sentence here. Broken piece.",
        "response_format": "pcm",
        "stream_format": "sse",
    }
    r = httpx.post(f"{poisoned_server.url}/v1/audio/speech", json=body, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    *deltas, last = events(r.content)
    assert len(deltas) == 1 and deltas[0]["type"] == "speech.audio.delta" and deltas[0]["audio"]
    assert last["type"] == "error" and last["error"]["type"] == "server_error", last
    assert "synthesis failed (RuntimeError: CUDA error" in last["error"]["message"]
