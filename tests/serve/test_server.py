"""The HTTP server end to end: the official `openai` client, every bad request's status and message,
16 concurrent clients (each response exactly its own audio), a client leaving mid-stream, a full
queue. CPU: tiny random model, eager engines, a stand-in vocoder (conftest.py)."""

from __future__ import annotations

import asyncio
import struct
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason='needs the serve extra: pip install -e ".[serve]"')
pytest.importorskip("httpx", reason='needs httpx: pip install -e ".[dev]"')
import httpx

TEXTS = [
    "Hello there.",
    "The quick brown fox jumps over the lazy dog. It was not amused!",
    "One, two, three. Four five six? Seven eight nine ten, eleven twelve.",
    "A short one.",
    (
        "Printing, in the only sense with which we are at present concerned, differs from most if not "
        "from all the arts and crafts represented in the Exhibition."
    ),
    "Yes.",
    "They had 3 dogs and 12 cats. Dr. Smith paid $4.50 for them.",
]


def pcm_of_wav(data: bytes) -> np.ndarray:
    """int16 samples of a 44-byte-header PCM wav (streaming header or exact)."""
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt " and data[36:40] == b"data", data[:44]
    channels, rate, bits = struct.unpack("<H", data[22:24])[0], *struct.unpack("<I", data[24:28]), data[34]
    assert (channels, rate, bits) == (1, 22050, 16)
    return np.frombuffer(data[44:], dtype="<i2")


def expected_samples(offline, text: str, speed: float = 1.0) -> int:
    """Frames x 256 of `text` through the offline router, cut at sentences as the server does."""
    (routed,), _ = offline([text], alpha=1 / speed, sentences=True)
    assert routed.frames == int(routed.durations.sum())
    return int(routed.durations.sum()) * 256


def test_openai_client_plain_and_streaming(server, offline):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    text = TEXTS[2]
    plain = client.audio.speech.create(model="tts-1", voice="demo", input=text, response_format="wav")
    audio = pcm_of_wav(plain.content)
    assert len(audio) == expected_samples(offline, text) > 0
    assert struct.unpack("<I", plain.content[40:44])[0] == 0xFFFFFFFF  # streamed: size unknown up front

    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="demo", input=text, response_format="pcm"
    ) as response:
        assert response.headers["content-type"] == "audio/pcm"
        chunks = list(response.iter_bytes())
    assert np.array_equal(np.frombuffer(b"".join(chunks), "<i2"), audio)

    whole = client.audio.speech.create(
        model="tts-1", voice="demo", input=text, response_format="wav", extra_body={"stream": False}
    )
    assert struct.unpack("<I", whole.content[40:44])[0] == 2 * len(audio)  # exact sizes when not streaming
    assert np.array_equal(pcm_of_wav(whole.content), audio)

    slow = client.audio.speech.create(
        model="tts-1", voice="demo", input=text, response_format="pcm", speed=0.5
    )
    assert len(slow.content) // 2 == expected_samples(offline, text, speed=0.5) > len(audio)


@pytest.mark.parametrize("fmt", ["flac", "mp3"])
def test_whole_file_formats_decode_to_the_same_length(server, offline, fmt):
    import io

    import soundfile

    from fastspeech.serve.audio import supported_formats

    if fmt not in supported_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    r = httpx.post(f"{server.url}/v1/audio/speech", json={"input": TEXTS[0], "response_format": fmt})
    assert r.status_code == 200 and r.headers["content-type"].startswith("audio/")
    wav, rate = soundfile.read(io.BytesIO(r.content))
    assert rate == 22050
    if fmt == "flac":  # lossless: exact length; mp3 adds encoder delay and padding
        assert len(wav) == expected_samples(offline, TEXTS[0])


BAD = [
    ({"input": ""}, 400, "input is empty"),
    ({"input": "   "}, 400, "input is empty"),
    ({"input": "Snow \u2603 and \u2602 today."}, 400, "'\u2603', '\u2602'; remove them"),
    ({"input": "word " * 120}, 400, "600 characters, more than this server takes (500"),
    ({"input": "Hi.", "voice": "alloy"}, 400, "unknown voice 'alloy'; this server has: demo"),
    ({"input": "Hi.", "response_format": "aac"}, 400, "use one of wav, pcm, flac"),
    ({"input": "Hi.", "speed": 5.0}, 400, "speed 5.0 is out of range; use 0.25 to 4.0"),
    ({"input": "Hi.", "speed": 0.1}, 400, "speed 0.1 is out of range"),
    ({"input": "Hi.", "stream_format": "ogg"}, 400, "'ogg' is not supported; use one of audio, sse"),
    ({"voice": "demo"}, 400, "input: Field required"),
    ({"input": 3}, 400, "input: Input should be a valid string"),
    # Strict JSON types: nothing read as something else.
    ({"input": "Hi.", "speed": True}, 400, "invalid request: speed: Input should be a valid number"),
    ({"input": "Hi.", "speed": "2"}, 400, "invalid request: speed: Input should be a valid number"),
    ({"input": "Hi.", "stream": "yes"}, 400, "invalid request: stream: Input should be a valid boolean"),
    ({"input": "Hi.", "stream": 1}, 400, "invalid request: stream: Input should be a valid boolean"),
    ({"input": "Hi.", "voice": ""}, 400, "unknown voice ''; this server has: demo"),
    ({"input": "Hi.", "voice": {"id": "alloy"}}, 400, "unknown voice 'alloy'; this server has: demo"),
    ({"input": "Hi.", "voice": {"name": "demo"}}, 400, "voice.VoiceRef.id: Field required"),
    ([{"input": "Hi."}], 400, "the request body is JSON but not an object; send a JSON object with"),
    ("Hi.", 400, "the request body is JSON but not an object"),
]


@pytest.mark.parametrize("body, status, message", BAD, ids=[m for _, _, m in BAD])
def test_bad_requests_get_their_status_and_an_openai_error(server, body, status, message):
    r = httpx.post(f"{server.url}/v1/audio/speech", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error["message"] and error["type"] and "Traceback" not in r.text
    assert "on_unknown" not in error["message"]  # a server setting the client cannot change


SEND_JSON = 'send a JSON object with Content-Type: application/json, e.g. {"input": "Hello there."}'


@pytest.mark.parametrize(
    "content, content_type, message",
    [
        (b"Hello there.", "application/json", "the request body is not valid JSON (Expecting value); "),
        (b"", "application/json", "the request body is empty; "),
        (b'{"input": "Hi."}', "text/plain", "the request body is sent as text/plain; "),
        (b'{"input": "Hi."}', "text/json", "the request body is sent as text/json; "),  # not "not an object"
        (b'{"input": "Hi."}', "application/jsonfoo", "the request body is sent as application/jsonfoo; "),
        (b'{"input": "Hi."}', None, "the request body is sent without a Content-Type; "),
        (b'{"input": "Hi \xff."}', "application/json", "the request body could not be read ("),
    ],
)
def test_a_body_that_is_not_a_json_object_says_how_to_send_one(server, content, content_type, message):
    headers = {"content-type": content_type} if content_type else {}
    before = _requests(server, "400")
    r = httpx.post(f"{server.url}/v1/audio/speech", content=content, headers=headers)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, "invalid_body")
    assert error["message"].startswith(message) and error["message"].endswith(SEND_JSON), error
    assert _requests(server, "400") == before + 1  # counted as any other bad request


def _requests(server, status: str) -> float:
    line = f'fastspeech_requests_total{{status="{status}"}} '
    text = httpx.get(f"{server.url}/metrics").text
    return next((float(x[len(line) :]) for x in text.splitlines() if x.startswith(line)), 0.0)


def test_voice_as_an_object_with_its_id_is_that_voice(server):
    """OpenAI's SDK also sends `voice` as {"id": name} (custom voices)."""
    body = {"input": TEXTS[0], "response_format": "pcm"}
    by_name = httpx.post(f"{server.url}/v1/audio/speech", json={**body, "voice": "demo"}, timeout=30)
    by_id = httpx.post(f"{server.url}/v1/audio/speech", json={**body, "voice": {"id": "demo"}}, timeout=30)
    assert by_name.status_code == by_id.status_code == 200 and by_id.content == by_name.content


def _chunked(*pieces: bytes):
    yield from pieces  # an iterator body: httpx sends it chunked, without a Content-Length


@pytest.mark.parametrize("how", ["content-length", "chunked"])
def test_a_body_too_large_for_the_input_limit_is_a_413_before_it_is_read_whole(server, offline, how):
    from fastspeech.serve.app import BODY_BYTES_EXTRA, BODY_BYTES_PER_CHAR

    limit = BODY_BYTES_PER_CHAR * 500 + BODY_BYTES_EXTRA  # the server's serve.max_chars is 500
    body = b'{"input": "' + b"a" * limit + b'"}'
    content = body if how == "content-length" else _chunked(body[:4000], body[4000:], b" ")
    before = _requests(server, "413")
    r = httpx.post(
        f"{server.url}/v1/audio/speech", content=content, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_too_large")
    expected = f"{len(body)} bytes or more" if how == "content-length" else "bytes or more"
    assert (
        expected in error["message"] and "input limit of 500 characters (serve.max_chars)" in error["message"]
    )
    assert _requests(server, "413") == before + 1
    # At the limit a body is read; 500 characters as JSON escapes (6 bytes each) still speak.
    escaped = '{"input": "' + "\\u0061" * 499 + '.", "response_format": "pcm"}'
    assert len(escaped) <= limit
    r = httpx.post(
        f"{server.url}/v1/audio/speech", content=escaped, headers={"content-type": "application/json"}
    )
    assert r.status_code == 200 and len(r.content) == 2 * expected_samples(offline, "a" * 499 + ".")


def test_input_over_the_limit_is_the_openai_clients_bad_request(server):
    """OpenAI answers over-long input with a 400, which its client raises as BadRequestError."""
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.speech.create(model="tts-1", voice="demo", input="word " * 120)
    assert info.value.code == "input_too_long" and "more than this server takes (500" in info.value.message


def test_head_healthz_and_cors_only_where_configured(server, cors_service):
    from fastapi.testclient import TestClient

    from fastspeech.serve.app import create_app

    assert httpx.head(f"{server.url}/healthz").status_code == 200  # load balancers' checks
    preflight = {"Origin": "https://example.com", "Access-Control-Request-Method": "POST"}
    closed = httpx.options(f"{server.url}/v1/audio/speech", headers=preflight)
    assert closed.status_code == 405 and "access-control-allow-origin" not in closed.headers  # default: none
    with TestClient(create_app(service=cors_service)) as client:
        r = client.options("/v1/audio/speech", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://example.com"
        r = client.post("/v1/audio/speech", json={"input": "Hi."}, headers={"Origin": "https://example.com"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://example.com"
        other = client.options("/v1/audio/speech", headers={**preflight, "Origin": "https://evil.example"})
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("stream", [True, False])
def test_pcm_at_openais_24_khz_is_the_22050_hz_audio_resampled(server, pcm24_server, stream):
    """serve.pcm_rate=24000: a client written for OpenAI's pcm plays it at the right speed. Streamed, the
    sentences go through one resampler in turn, so they join as one signal (whole: within 2 LSB)."""
    import soxr

    body = {"input": TEXTS[2], "response_format": "pcm", "stream": stream}  # three sentences
    native = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=30)
    at_24k = httpx.post(f"{pcm24_server.url}/v1/audio/speech", json=body, timeout=30)
    assert native.status_code == at_24k.status_code == 200
    samples = np.frombuffer(native.content, "<i2")
    got = np.frombuffer(at_24k.content, "<i2")
    want = soxr.resample(samples, 22050, 24000)
    assert abs(len(got) - round(len(samples) * 24000 / 22050)) <= 1 and len(got) == len(want)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 4  # soxr's streaming vs one-shot rounding
    other = httpx.post(f"{pcm24_server.url}/v1/audio/speech", json={**body, "stream": not stream}, timeout=30)
    other = np.frombuffer(other.content, "<i2")  # resampled in one piece or sentence by sentence
    assert len(other) == len(got) and np.abs(other.astype(int) - got.astype(int)).max() <= 2
    wav = httpx.post(
        f"{pcm24_server.url}/v1/audio/speech", json={**body, "response_format": "wav"}, timeout=30
    )
    assert np.array_equal(pcm_of_wav(wav.content), samples)  # wav says its rate: still 22050 Hz


def test_wrong_method_and_unknown_route_are_openai_errors(server):
    import openai

    r = httpx.get(f"{server.url}/v1/audio/speech")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["error"] == {
        "message": "GET /v1/audio/speech is not allowed; use POST",
        "type": "invalid_request_error",
        "param": None,
        "code": "method_not_allowed",
    }
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("tts-1")
    assert info.value.message == "Error code: 404 - " + (
        "no route GET /v1/models/tts-1; this server has POST /v1/audio/speech, GET /v1/models, /healthz, /metrics"
    )


def test_without_a_working_soundfile_flac_is_a_400_and_wav_pcm_still_play(server, monkeypatch):
    """soundfile installed without its cffi or libsndfile (as on our GPU image) raises on import:
    the server then serves wav and pcm, and a flac request gets a 400 naming them, not a 500."""
    import sys

    from fastspeech.serve import audio

    monkeypatch.setitem(sys.modules, "soundfile", None)  # any import of it raises ImportError
    audio.supported_formats.cache_clear()
    try:
        assert audio.supported_formats() == ("wav", "pcm")
        r = httpx.post(f"{server.url}/v1/audio/speech", json={"input": "Hi.", "response_format": "flac"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "unsupported_format"
        assert "use one of wav, pcm" in r.json()["error"]["message"]
        for fmt in ("wav", "pcm"):
            r = httpx.post(f"{server.url}/v1/audio/speech", json={"input": "Hi.", "response_format": fmt})
            assert r.status_code == 200 and len(r.content) > 44
    finally:
        audio.supported_formats.cache_clear()


@pytest.mark.parametrize("speed", [0.25, 2, 4.0])  # the bounds, and an int (a JSON number all the same)
def test_speed_at_the_bounds_gives_exactly_its_audio(server, offline, speed):
    import io

    import soundfile

    r = httpx.post(f"{server.url}/v1/audio/speech", json={"input": TEXTS[3], "speed": speed, "stream": False})
    assert r.status_code == 200, r.text
    wav, rate = soundfile.read(io.BytesIO(r.content), dtype="int16")
    assert rate == 22050 and len(wav) == expected_samples(offline, TEXTS[3], speed) > 0


def test_bad_requests_through_the_openai_client(server):
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="unknown voice 'nova'"):
        client.audio.speech.create(model="tts-1", voice="nova", input="Hi.")


def test_health_and_metrics(server):
    assert httpx.get(f"{server.url}/healthz").json() == {
        "status": "ready",
        "voices": ["demo"],
        "detail": None,
    }
    httpx.post(f"{server.url}/v1/audio/speech", json={"input": "Hi there."})
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        'fastspeech_requests_total{status="200"}',
        "fastspeech_request_latency_seconds_bucket",
        "fastspeech_ttfb_seconds_count",
        "fastspeech_batch_size_bucket",
        "fastspeech_queue_depth",
        "fastspeech_padded_fraction_sum",
        "fastspeech_audio_seconds_total",
    ):
        assert name in text, name


def test_16_concurrent_clients_each_get_exactly_their_own_audio(server, offline):
    """~5 s of 16 clients in a loop over texts of mixed lengths; every response equals that text
    synthesized alone (sent first, one at a time), and its length is the sum of its durations x 256."""
    alone, expected = {}, {}
    for i, text in enumerate(TEXTS):
        speed = 1.0 + 0.25 * (i % 3)  # requests of other speeds share calls (alpha per row)
        r = httpx.post(f"{server.url}/v1/audio/speech", json={"input": text, "speed": speed}, timeout=60)
        assert r.status_code == 200
        alone[i] = pcm_of_wav(r.content)
        expected[i] = expected_samples(server_offline := offline, text, speed)
        assert len(alone[i]) == expected[i]
    del server_offline
    errors, done, batched = [], [], server.service.metrics.batch_size

    async def client(k: int, until: float) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            j = k
            while time.monotonic() < until:
                i = j % len(TEXTS)
                speed = 1.0 + 0.25 * (i % 3)
                r = await http.post("/v1/audio/speech", json={"input": TEXTS[i], "speed": speed})
                if r.status_code != 200:
                    errors.append((r.status_code, r.text))
                else:
                    audio = pcm_of_wav(r.content)
                    if len(audio) != expected[i] or not np.array_equal(audio, alone[i]):
                        errors.append((i, len(audio), expected[i]))
                    done.append(i)
                j += 1

    calls_before = sum(b.value for b in batched.collect()[0].samples if b.name.endswith("_count"))
    until = time.monotonic() + 5
    asyncio.run(_gather(client(k, until) for k in range(16)))
    assert not errors, errors[:5]
    assert len(done) >= 16 and set(done) == set(range(len(TEXTS)))
    samples = {s.name: s.value for s in batched.collect()[0].samples if not s.labels.get("le")}
    calls = samples["fastspeech_batch_size_count"] - calls_before
    assert calls > 0 and any(  # some calls held more than one request's pieces
        s.value > 0 for s in batched.collect()[0].samples if s.labels.get("le") == "2.0"
    )


async def _gather(coros):
    await asyncio.gather(*coros)


# ---- the slow server (conftest.py): every engine call takes 0.1 s, one piece a call, 2 requests at most


LONG = " ".join(
    f"Sentence number {w} is here."
    for w in (["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"] * 2)
)


def test_client_leaving_mid_stream_drops_its_remaining_work(slow_server):
    service = slow_server.service
    engines = service.voices["demo"].router.engines
    body = {"input": LONG, "response_format": "pcm"}
    with (
        httpx.Client(base_url=slow_server.url, timeout=30) as http,
        http.stream("POST", "/v1/audio/speech", json=body) as r,
    ):
        assert r.status_code == 200
        next(r.iter_bytes())  # the first sentence's audio, then hang up
    deadline = time.monotonic() + 10
    while service.batcher.in_flight() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.batcher.in_flight() == 0 and service.batcher.queued_pieces() == 0
    calls = sum(e.calls for e in engines)
    assert service.batcher.cancelled_pieces > 0 and calls < 20, (calls, service.batcher.cancelled_pieces)
    time.sleep(0.3)
    assert sum(e.calls for e in engines) == calls  # nothing more ran for it
    r = httpx.post(f"{slow_server.url}/v1/audio/speech", json={"input": "Still here."}, timeout=30)
    assert r.status_code == 200 and len(pcm_of_wav(r.content)) > 0
    metrics = httpx.get(f"{slow_server.url}/metrics").text
    assert 'fastspeech_requests_total{status="499"} 1.0' in metrics
    assert f"fastspeech_dropped_pieces_total {float(service.batcher.cancelled_pieces)}" in metrics


@pytest.mark.parametrize(
    "body", [{"stream": False}, {"response_format": "flac"}], ids=["stream false", "flac"]
)
def test_client_leaving_a_whole_response_drops_its_remaining_work(slow_server, body):
    """A response sent whole (not streamed) is cancelled too when its client gives up waiting."""
    from fastspeech.serve.audio import supported_formats

    if body.get("response_format") == "flac" and "flac" not in supported_formats():
        pytest.skip("this libsndfile cannot write flac")
    service = slow_server.service
    engines = service.voices["demo"].router.engines
    before = service.batcher.cancelled_pieces, sum(e.calls for e in engines)
    with pytest.raises(httpx.ReadTimeout):  # 0.5 s: a few of the ~20 sentences' 0.1 s calls
        httpx.post(f"{slow_server.url}/v1/audio/speech", json={"input": LONG, **body}, timeout=0.5)
    deadline = time.monotonic() + 10
    while service.batcher.in_flight() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.batcher.in_flight() == 0 and service.batcher.queued_pieces() == 0
    calls = sum(e.calls for e in engines) - before[1]
    assert service.batcher.cancelled_pieces > before[0] and calls < 15, (
        calls,
        service.batcher.cancelled_pieces,
    )
    r = httpx.post(f"{slow_server.url}/v1/audio/speech", json={"input": "Still here."}, timeout=30)
    assert r.status_code == 200 and len(pcm_of_wav(r.content)) > 0
    assert 'fastspeech_requests_total{status="499"} 1.0' in httpx.get(f"{slow_server.url}/metrics").text


def test_full_queue_is_503_with_retry_after_and_a_slow_reader_blocks_nobody(slow_server):
    with httpx.Client(base_url=slow_server.url, timeout=30) as http:
        # Two requests in flight (serve.max_queue=2); the first is never read (a slow reader).
        with http.stream(
            "POST", "/v1/audio/speech", json={"input": LONG, "response_format": "pcm"}
        ) as unread:
            with (
                httpx.Client(base_url=slow_server.url, timeout=30) as other,
                other.stream("POST", "/v1/audio/speech", json={"input": LONG}) as second,
            ):
                full = httpx.post(f"{slow_server.url}/v1/audio/speech", json={"input": "One more."})
                assert full.status_code == 503 and int(full.headers["retry-after"]) >= 1
                assert "serve.max_queue=2" in full.json()["error"]["message"]
                audio = pcm_of_wav(second.read())  # completes while `unread` is never read
                assert len(audio) > 0
            assert unread.status_code == 200
        ok = httpx.post(f"{slow_server.url}/v1/audio/speech", json={"input": "One more."}, timeout=30)
        assert ok.status_code == 200


@pytest.mark.parametrize("fmt", ["pcm", "wav"])
def test_a_failure_mid_stream_cuts_the_audio_off_so_clients_see_it_incomplete(poisoned_server, fmt):
    """The first sentence's audio has gone out with a 200; the failed second one closes the connection
    before the body's last chunk, so no client takes the short audio for the whole."""
    import openai

    body = {"input": "A fine first sentence here. Broken piece.", "response_format": fmt}
    got = bytearray()
    url = f"{poisoned_server.url}/v1/audio/speech"
    with (
        pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"),
        httpx.stream("POST", url, json=body, timeout=30) as r,
    ):
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            got += chunk
    assert len(got) > 44  # the first sentence arrived before the cut
    client = openai.OpenAI(base_url=f"{poisoned_server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        client.audio.speech.create(model="tts-1", voice="demo", **body)


def test_an_engine_failure_is_a_500_for_that_request_only(poisoned_server):
    async def main():
        async with httpx.AsyncClient(base_url=poisoned_server.url, timeout=30) as http:
            bodies = [
                {"input": "Fine. Broken piece.", "stream": False},
                {"input": "Broken piece.", "response_format": "pcm"},
                {"input": "Fine too."},
                {"input": "All fine here."},
            ]
            return await asyncio.gather(*(http.post("/v1/audio/speech", json=b) for b in bodies))

    whole, streamed, fine, also_fine = asyncio.run(main())  # all four meet in one engine call
    for r in (whole, streamed):
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        assert "synthesis failed (RuntimeError: CUDA error" in r.json()["error"]["message"]
    assert fine.status_code == also_fine.status_code == 200 and len(pcm_of_wav(fine.content)) > 0
