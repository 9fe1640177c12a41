"""fastspeech-trt: FastSpeech text-to-speech inference, as fast as the GPU allows.

The data path, one module each: `text` (text -> token ids) -> `model` (token ids -> mel) run by an
`engine` (fixed shapes, compiled by one of `backends`) -> `vocoder` (mel -> wav). `pipeline` ties
them together for `run.py`; `TTS` is the same path from Python (`fastspeech.TTS()("Hello.")`).
"""

from fastspeech.compile import compile  # also registers torch.compile(backend="fastspeech")
from fastspeech.model import FastSpeech, FastSpeechConfig, ModelOutput
from fastspeech.tts import TTS, Speech

__all__ = ["TTS", "FastSpeech", "FastSpeechConfig", "ModelOutput", "Speech", "compile"]
