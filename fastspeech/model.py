"""FastSpeech, inference only, with exactly DLE's parameter names and shapes.

One file, gpt-fast style: `FastSpeechConfig` (hparams, DLE's YAML key names) and
`FastSpeech -> FFTBlocks -> FFTBlock -> MultiHeadAttention / PositionwiseFeedForward`, plus the
`LengthRegulator` with its `DurationPredictor`. The state dict matches DLE's (159 tensors,
47,032,273 elements at default hparams), so DLE checkpoints load as they are.

Outputs do not depend on padding: a text gives the same mel in any engine size or batch, equal to
DLE's unpadded forward (see `PositionwiseFeedForward`; DLE's own output changes with any padding at
all, docs/dle_differences.md#padding).

Where DLE's graph has its two custom TensorRT plugins we call our two custom ops
(`kernels.add_pos_enc`, `kernels.regulate_length`); self-attention is our third
(`kernels.attention`: reads q, k, v straight from the fused projection, takes the lengths instead
of a mask), and the Conv1ds are the fourth (`kernels.conv1d`: the k shifted rows read in place,
bias, ReLU and row mask in one kernel; small batches and fp32 stay cuBLAS GEMMs, see `conv1d`). The
attention's projections are the fifth for few rows (`kernels.linear`: launched to overlap the kernel
before it on Hopper; see `linear`). Shapes never
depend on data once `max_out` is given, so the whole forward compiles with
`torch.compile(fullgraph=True, dynamic=False)`.

Shapes use the seed's letters: B batch, Ti input tokens, To output frames, H hidden (d_model).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from fastspeech.text import N_SYMBOLS


@dataclass(frozen=True)
class FastSpeechConfig:
    """Model hparams, named as in DLE's `base.yaml` (defaults are DLE's)."""

    n_symbols: int = N_SYMBOLS  # embedding rows: len(symbols) + 1 (row 0 = padding)
    d_model: int = 384
    phoneme_side_n_layer: int = 6
    phoneme_side_head: int = 2
    phoneme_side_conv1d_filter_size: int = 1536
    mel_side_n_layer: int = 6
    mel_side_head: int = 2
    mel_side_conv1d_filter_size: int = 1536
    max_seq_len: int = 2048  # positions per side (DLE: "23s" of mel)
    fft_conv1d_kernel: int = 3
    fft_conv1d_padding: int = 1
    duration_predictor_filter_size: int = 256
    duration_predictor_kernel_size: int = 3
    d_k: int = 64  # hard-coded in DLE (d_k = d_v = 64)
    num_mels: int = 80
    dropout: float = 0.1  # unused at inference; kept so DLE YAMLs load unchanged

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FastSpeechConfig:
        """Build from a config mapping, ignoring keys that are not model hparams (name, comments)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


class ModelOutput(NamedTuple):
    """What one forward returns.

    mel (B, To, num_mels): frames at t >= mel_lens[b] are zero.
    mel_lens (B,): valid frames, min(total, To).
    durations (B, Ti) int64: frames per token after alpha and rounding; durations.sum(1) is the
    untruncated predicted length, so callers can see when speech did not fit in To.
    """

    mel: torch.Tensor
    mel_lens: torch.Tensor
    durations: torch.Tensor


class MultiHeadAttention(nn.Module):
    """DLE's post-LN self-attention with one fused projection, laid out head-major.

    `linear` maps H -> n_head * (d_k + d_k + d_v); within each head's chunk the columns are
    [q | k | v]. `self_attention` (the `attention` op) reads that layout as it is and attends over
    the first lengths[b] rows only; its padding rows are zeros. The optional `acts` dict collects
    named activations for the verify mode.
    """

    def __init__(self, d_model: int, n_head: int, d_k: int):
        super().__init__()
        self.n_head, self.d_k = n_head, d_k
        self.linear = nn.Linear(d_model, n_head * 3 * d_k)
        self.layer_norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(n_head * d_k, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, acts: dict | None, name: str) -> torch.Tensor:
        qkv = linear(x, self.linear)  # (B, T, n_head * 3 * d_k)
        record(acts, f"{name}.linear", qkv)
        out = self_attention(qkv, lengths, self.n_head)  # (B, T, n_head * d_k), zeros at t >= lengths[b]
        record(acts, f"{name}.scaled_dot", out)
        out = linear(out, self.fc) + x
        record(acts, f"{name}.residual", out)
        out = self.layer_norm(out)
        record(acts, f"{name}.ln", out)
        return out


class PositionwiseFeedForward(nn.Module):
    """Conv1d(k=3) -> ReLU -> Conv1d(k=3), residual, post-LN (DLE's `pos_ffn`).

    The hidden rows at padding are zeroed before the second conv. DLE does not: there `w_1`'s
    output at the first padding row is the conv of the last real row plus the bias
    (b1 + W1[:, :, 0] . x[L-1]), its ReLU is in general not zero, and `w_2`'s right tap carries it
    into the last real row. So any padding at all changes DLE's output for a text, whatever its
    amount (only the first padding row reaches a real one); see docs/dle_differences.md#padding.
    Zeroing makes every engine size give the output of DLE's unpadded (batch 1) forward.
    """

    def __init__(self, d_model: int, d_inner: int, kernel: int, padding: int):
        super().__init__()
        self.w_1 = tap_major(nn.Conv1d(d_model, d_inner, kernel, padding=padding))
        self.w_2 = tap_major(nn.Conv1d(d_inner, d_model, kernel, padding=padding))
        self.layer_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, acts: dict | None, name: str) -> torch.Tensor:
        h = conv1d(x, self.w_1, lengths, relu=True)  # (B, T, d_inner), zero rows at padding
        record(acts, f"{name}.conv1", h)
        h = conv1d(h, self.w_2, lengths, relu=False)  # (B, T, H)
        record(acts, f"{name}.conv2", h)
        out = h + x
        record(acts, f"{name}.residual", out)
        out = self.layer_norm(out)
        record(acts, f"{name}.ln", out)
        return out


class FFTBlock(nn.Module):
    def __init__(self, cfg: FastSpeechConfig, n_head: int, d_inner: int):
        super().__init__()
        self.slf_attn = MultiHeadAttention(cfg.d_model, n_head, cfg.d_k)
        self.pos_ffn = PositionwiseFeedForward(
            cfg.d_model, d_inner, cfg.fft_conv1d_kernel, cfg.fft_conv1d_padding
        )

    def forward(self, x, lengths, row_valid, acts: dict | None, name: str) -> torch.Tensor:
        x = self.slf_attn(x, lengths, acts, f"{name}.slf_attn") * row_valid
        x = self.pos_ffn(x, lengths, acts, f"{name}.pos_ffn") * row_valid
        record(acts, name, x)
        return x


class FFTBlocks(nn.Module):
    """One side of the model (DLE's `phoneme_side` or `mel_side`): positions + N FFT blocks.

    `position` is DLE's frozen sinusoid table. It stays in the state dict so checkpoints load and
    save unchanged; the forward computes the same encoding in the `add_pos_enc` op instead.
    """

    def __init__(self, cfg: FastSpeechConfig, n_layer: int, n_head: int, d_inner: int):
        super().__init__()
        table = kernels.sinusoid_table(cfg.max_seq_len + 1, cfg.d_model)
        self.position = nn.Embedding.from_pretrained(table, freeze=True, padding_idx=0)
        self.layer_stack = nn.ModuleList(FFTBlock(cfg, n_head, d_inner) for _ in range(n_layer))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, acts: dict | None, name: str) -> torch.Tensor:
        T = x.shape[1]
        row_valid = torch.arange(T, device=x.device)[None, :] < lengths[:, None]  # (B, T)
        row_valid = row_valid[..., None].to(x.dtype)  # (B, T, 1)
        x = kernels.add_pos_enc(x, lengths)
        record(acts, f"{name}.add_pos_enc", x)
        for i, layer in enumerate(self.layer_stack):
            x = layer(x, lengths, row_valid, acts, f"{name}.layer_stack.{i}")
        return x


class DurationPredictor(nn.Module):
    """Two (Conv1d -> ReLU -> LayerNorm) layers and a linear head; predicts log(1 + frames).

    Padding rows are zeroed between the convs for the same reason as in `PositionwiseFeedForward`.
    """

    def __init__(self, cfg: FastSpeechConfig):
        super().__init__()
        f, k = cfg.duration_predictor_filter_size, cfg.duration_predictor_kernel_size
        self.conv1d_1 = tap_major(nn.Conv1d(cfg.d_model, f, k, padding=1))  # DLE hard-codes padding=1
        self.layer_norm_1 = nn.LayerNorm(f)
        self.conv1d_2 = tap_major(nn.Conv1d(f, f, k, padding=1))
        self.layer_norm_2 = nn.LayerNorm(f)
        self.linear_layer = nn.Linear(f, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, row_valid: torch.Tensor) -> torch.Tensor:
        h = self.layer_norm_1(conv1d(x * row_valid, self.conv1d_1, lengths, relu=True)) * row_valid
        h = self.layer_norm_2(conv1d(h, self.conv1d_2, lengths, relu=True))
        return (self.linear_layer(h) * row_valid).squeeze(-1)  # (B, Ti)


class LengthRegulator(nn.Module):
    def __init__(self, cfg: FastSpeechConfig):
        super().__init__()
        self.max_seq_len = cfg.max_seq_len
        self.duration_predictor = DurationPredictor(cfg)

    def forward(
        self,
        x: torch.Tensor,
        token_lens: torch.Tensor,
        alpha: torch.Tensor,
        max_out: int | None,
        trim: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, Ti, H) -> expanded (B, To, H) and the integer durations (B, Ti).

        durations = round(clamp(exp(pred) - 1, min=0) * alpha), half-to-even like DLE's torch.round;
        padding tokens get 0. With max_out None (eager only) To is the longest predicted length,
        at least 1 frame and at most max_seq_len, as DLE crops; with `trim` (eager only) the longest
        predicted length, at least 1 frame and at most max_out.
        """
        row_valid = (torch.arange(x.shape[1], device=x.device)[None, :] < token_lens[:, None])[..., None]
        log_dur = self.duration_predictor(x, token_lens, row_valid.to(x.dtype))
        frames = torch.clamp_min(torch.exp(log_dur.float()) - 1, 0) * alpha.float()[:, None]
        durations = torch.round(frames).long() * row_valid.squeeze(-1)
        if max_out is None or trim:
            max_out = int(durations.sum(1).max().clamp(1, max_out or self.max_seq_len))
        return kernels.regulate_length(x, durations, max_out), durations


class FastSpeech(nn.Module):
    """Token ids (B, Ti), zero-padded -> `ModelOutput` (mel, mel lengths, durations)."""

    def __init__(self, cfg: FastSpeechConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or FastSpeechConfig()
        self.word_emb = nn.Embedding(cfg.n_symbols, cfg.d_model, padding_idx=0)
        self.phoneme_side = FFTBlocks(
            cfg, cfg.phoneme_side_n_layer, cfg.phoneme_side_head, cfg.phoneme_side_conv1d_filter_size
        )
        self.length_regulator = LengthRegulator(cfg)
        self.mel_side = FFTBlocks(
            cfg, cfg.mel_side_n_layer, cfg.mel_side_head, cfg.mel_side_conv1d_filter_size
        )
        self.mel_linear = nn.Linear(cfg.d_model, cfg.num_mels)

    def forward(
        self,
        tokens: torch.Tensor,
        alpha: torch.Tensor | float = 1.0,
        max_out: int | None = None,
        acts: dict[str, torch.Tensor] | None = None,
        trim: bool = False,
    ) -> ModelOutput:
        """tokens (B, Ti) int, 0 = padding at the end; alpha: speed factor, scalar or (B,).

        max_out fixes To (engines pass it; the graph then has static shapes). Left as None, To is
        the longest predicted length in the batch (capped at max_seq_len): an eager-only,
        data-dependent shape. `trim` with max_out: To is the longest predicted length capped at
        max_out (eager engines: a 1 s sentence in a 1024-frame engine runs the mel side on its ~90
        frames; outputs are those of To = max_out cut there, as they do not depend on padding).
        """
        B = tokens.shape[0]
        alpha = torch.as_tensor(alpha, dtype=torch.float32, device=tokens.device).expand(B)
        token_lens = (tokens != 0).sum(1)  # (B,)
        x = self.word_emb(tokens)  # (B, Ti, H)
        record(acts, "emb", x)
        x = self.phoneme_side(x, token_lens, acts, "phoneme_side")
        record(acts, "phoneme_side.seq", x)
        x, durations = self.length_regulator(x, token_lens, alpha, max_out, trim)  # x: (B, To, H)
        record(acts, "length_regulator.seq", x)
        record(acts, "length_regulator.dur", durations)
        max_out = x.shape[1]
        frames = durations.sum(1)  # (B,), may exceed max_out: speech that did not fit
        mel_lens = frames.clamp_max(max_out)
        # The mel side's ops take lengths beyond T as T, so they get the sum itself: given the
        # clamped value, Inductor computed a copy of it for each op call (tests/test_engine.py).
        x = self.mel_side(x, frames, acts, "mel_side")
        record(acts, "mel_side.seq", x)
        valid = torch.arange(max_out, device=x.device)[None, :, None] < mel_lens[:, None, None]
        mel = self.mel_linear(x) * valid
        record(acts, "out.seq", mel)
        return ModelOutput(mel, mel_lens, durations)


# B * T from which `conv1d` runs the op in fp16/bf16 (shapes are fixed per engine: one path each); convs
# that narrow more than 2x (the FFN's w_2, 1536 -> 384) from more rows (run 37, docs/kernels_history.md)
OP_MIN_ROWS = 4096
OP_MIN_ROWS_NARROWING = 16384
# B * T^2 up to which fp32 attention runs the op rather than SDPA (`self_attention`, run 45)
FP32_ATTENTION_MAX_WORK = 1 << 20
# B * T up to which the attention projections run the `linear` op in fp16/bf16 (`linear`, runs 79-80)
LINEAR_OP_MAX_ROWS = 2048


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """`layer(x)` for the attention's projections (qkv and fc): the `linear` op for few rows.

    At batch 1 these GEMMs are a few MFLOP each and cuBLAS's kernel is mostly launch and weight
    loads. The `linear` op (kernels/linear.py) is the same GEMM as a Triton kernel that Hopper
    starts while the kernel before it is still running (programmatic dependent launch), its weights
    prefetched into L2 meanwhile: in the engine 0.524 -> 0.505 ms per i128_o1024 call at batch 1 and
    0.398 -> 0.383 ms for i32_o256 (run 80, H200). In a chain of 24 such GEMMs it gains up to 2048
    rows, ties at 4096 and loses at 8192 (run 79), so the op runs up to LINEAR_OP_MAX_ROWS rows
    (B * T); fp32 keeps cuBLAS (the op's fp32 dot products use no tensor cores). A module-level
    function, like `conv1d`, so benchmarks can swap it.
    """
    if x.dtype != torch.float32 and x.numel() // x.shape[-1] <= LINEAR_OP_MAX_ROWS:
        return kernels.linear(x, layer.weight, layer.bias)
    return layer(x)


def conv1d(x: torch.Tensor, conv: nn.Conv1d, lengths: torch.Tensor, relu: bool) -> torch.Tensor:
    """`conv` on time-last x (B, T, C_in) -> (B, T, C_out), ReLU'd if asked, rows t >= lengths[b] zero.

    DLE's Conv1d wants (B, C, T); our activations are (B, T, C). Two ways, by shape, both reading the
    tap-major weight `conv.weight.permute(2, 0, 1)` (k, C_out, C_in) as a free view (`tap_major`):
    - the `conv1d` op (kernels/conv1d.py): one implicit-GEMM kernel that reads the k shifted rows of
      x itself (no unfold copy, no transposes, no taps buffer) and adds bias, ReLU and row mask in its
      epilogue; from OP_MIN_ROWS rows (B * T), or OP_MIN_ROWS_NARROWING for convs that narrow more
      than 2x;
    - otherwise multiply first: one cuBLAS GEMM to (B, T, k * C_out), then the k outputs added
      shifted in time with bias, ReLU and mask in one pointwise kernel that Inductor fuses (for
      w_2, into the residual + LayerNorm that follows).
    Run 37 (H200, fp16, docs/kernels_history.md): cuBLAS wins for few rows (B=1, T=1024: its GEMM 7.1 µs,
    the op 12 µs). The op wins for w_1 from 4096 rows (31 µs against 26 µs of GEMM plus a pass over
    its (B, T, 3 x 1536) taps). w_2 narrows to 384 columns over K = 4608: at 8192 rows the op's
    128 x 128 tiles make 1.45 waves (59 µs against cuBLAS's 44); from 16384 rows they tie (89 / 85
    µs, 333 / 318 µs at 65536), the GEMM's larger taps costing the LayerNorm after it ~16 µs more
    per layer, and the op needs no taps buffer (151 MB at B=64, T=1024).
    fp32 always takes the GEMM path: the op's IEEE fp32 dot products (no tensor cores, no TF32) ran
    at under 1 TFLOP/s (run 43, H200: w_2 at B=64, T=1024 582 ms, where cuBLAS's fp32 GEMM needs a few
    ms), so fp32 engines at B * T >= 4096 had become slower than plain `torch.compile`.
    Zero padding as the conv's own (stride 1, dilation 1). A module-level function, like
    `self_attention`, so benchmarks can swap in the previous path (benchmarks/latency.py).
    """
    taps = conv.weight.permute(2, 0, 1)  # (k, C_out, C_in), contiguous
    B, T, _ = x.shape
    narrowing = conv.in_channels > 2 * conv.out_channels
    if x.dtype != torch.float32 and B * T >= (OP_MIN_ROWS_NARROWING if narrowing else OP_MIN_ROWS):
        return kernels.conv1d(x, taps, conv.bias, lengths, conv.padding[0], relu)
    k, pad = conv.kernel_size[0], conv.padding[0]
    y = F.linear(x, taps.flatten(0, 1))  # (B, T, k * C_out)
    y = F.pad(y.view(B, T, k, -1), (0, 0, 0, 0, pad, k - 1 - pad))  # (B, T + k - 1, k, C_out)
    out = conv.bias
    for j in range(k):  # out[t] = sum_j y[t + j - pad, j]
        out = out + y[:, j : j + T, j]
    out = torch.relu(out) if relu else out
    return out * (torch.arange(T, device=x.device)[None, :, None] < lengths[:, None, None]).to(out.dtype)


def tap_major(conv: nn.Conv1d) -> nn.Conv1d:
    """Store `conv.weight` in (k, C_out, C_in) memory order; its shape stays DLE's (C_out, C_in, k).

    `conv1d` passes `weight.permute(2, 0, 1)` to the op: with this storage that is a free view, not
    a copy that a compiled graph repeats on every call (parameters are graph inputs to Inductor: the
    FFN's re-laid-out weight cost 12 x 3.3 µs per call on the H100, docs/kernels_history.md). Names, shapes
    and values are unchanged, so checkpoints load and save as they are: `load_state_dict` copies
    into the tensor in place, and `.to()`, `.clone()` and `deepcopy` preserve its strides
    (tests/test_model.py).
    """
    w = conv.weight
    conv.weight = nn.Parameter(
        w.detach().permute(2, 0, 1).contiguous().permute(1, 2, 0), requires_grad=w.requires_grad
    )
    return conv


def self_attention(qkv: torch.Tensor, lengths: torch.Tensor, n_head: int) -> torch.Tensor:
    """qkv (B, T, n_head * 3 * d_k) -> (B, T, n_head * d_k): the `attention` op (kernels/attention.py).

    Valid rows equal `F.scaled_dot_product_attention` with DLE's key-padding mask; padding rows are
    zeros. A module-level function, like `conv1d`, so benchmarks can swap in the
    reference (`kernels.attention_reference`, SDPA + mask) to measure the op.

    fp32 runs the op only up to FP32_ATTENTION_MAX_WORK query-key pairs per head (B * T^2): its IEEE
    fp32 dot products use no tensor cores, and past that SDPA (the reference) is faster (run 45, H200,
    T=1024: B=1 66 µs against the reference's 154; B=8 334 against 200; B=64, T=128 52 against 56).
    """
    B, T, _ = qkv.shape
    if qkv.dtype == torch.float32 and B * T * T > FP32_ATTENTION_MAX_WORK:
        return kernels.attention_reference(qkv, lengths, n_head)
    return kernels.attention(qkv, lengths, n_head)


def record(acts: dict | None, name: str, value: torch.Tensor) -> None:
    """Keep a named activation for the verify mode (no-op when acts is None)."""
    if acts is not None:
        acts[name] = value
