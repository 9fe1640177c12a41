"""Probe (issue 17): a whole side's FFT blocks at small T as one persistent kernel, every phase wide.

Runs 19-21 ran one FFT block as one persistent kernel and lost (0.55-0.69x the per-op path at batch 1):
its phases had few programs (whole-row LayerNorms on 2 programs at T = 32, split-K partials summed by
them) and each program's weights came from HBM after the barrier. This probe keeps the idea (programs
stay resident, grid-wide barriers instead of kernel boundaries) and changes what runs in each phase:
- every GEMM phase is cut into items of about equal weight bytes, enough for every SM (`w_2` split
  over K, its partials added with fp32 atomics into one buffer, so the LayerNorm after it reads one
  row, not 18 partials; the attention's `fc` per (row tile, head, column chunk), atomics too);
- each phase prefetches the next GEMM phase's weights into L2 before its own work (weights do not
  depend on data), so after a barrier the weights come from L2;
- all L layers of a side in one launch (6 phases each), not one launch per layer.
Phases of layer l (rows of one item per tile; T <= 256 so one tile of keys covers a sequence):
    0  qkv = X @ Wqkv^T + b                     items (row tile, 64 columns); zeroes FC
    1  FC += att(qkv)_h @ Wfc[:, h]^T           items (row tile, head, 128 columns); zeroes W2
    2  Y = LN1(FC + b_fc + X) * valid           items (row tile)
    3  HID = relu(conv(Y, W1) + b1) * valid     items (row tile, BN1 columns), 3 taps each
    4  W2 += conv(HID, W2) (one tap, KC chunk)  items (row tile, 64 columns, tap, K chunk)
    5  X = LN2(W2 + b2 + Y) * valid             items (row tile)
On the CPU interpreter (programs run one after another) each phase is its own launch.

Result (runs 74-77, H200; docs/kernels_history.md "Runs 74-77"): correct, and slower than the per-op path at
every T from 32 (1.05x at T = 32, 1.6x at T = 128, 2.1x at T = 256). A grid barrier costs 0.89 µs
against 1.20 µs for a kernel boundary in a CUDA graph, and a phase costs what a kernel costs.

Run: python -m benchmarks.kernels.probe_fft_stack [--T 32,128,256] [--check] [--sweep] [--phases] [--barriers]
"""

from __future__ import annotations

import argparse
import math
import statistics
from functools import partial

import torch
import triton
import triton.language as tl

from benchmarks.kernels.common import direct_launch, environment, graph_of, markdown_table, time_us
from kernels.linear import prefetch_l2

PHASES_PER_LAYER = 6


@triton.jit
def _prefetch(base_ptr, n_elems, pid, P: tl.constexpr, LINES: tl.constexpr, PREFETCH: tl.constexpr):
    """This program's share of an L2 prefetch of n_elems fp16 elements from base_ptr (128-byte lines)."""
    if PREFETCH:
        n_lines = tl.cdiv(n_elems, 64)
        per = tl.cdiv(n_lines, P)
        for i in range(0, per, LINES):
            line = pid * per + i + tl.arange(0, LINES)
            line = tl.minimum(line, n_lines - 1)
            prefetch_l2(base_ptr + line.to(tl.int64) * 64)


@triton.jit
def _ld_acquire(ptr):
    return tl.inline_asm_elementwise(
        "ld.global.acquire.gpu.b32 $0, [$1];", "=r,l", [ptr], dtype=tl.int32, is_pure=False, pack=1
    )


@triton.jit
def _barrier(bar_ptr, count, P: tl.constexpr, POLL_LOAD: tl.constexpr):
    """Grid-wide barrier number `count` (1, 2, ...) of this launch: all P programs resident. Arrive
    with a release add; wait polling either with atomic adds of 0 (acquire) or with acquire loads."""
    tl.debug_barrier()
    tl.atomic_add(bar_ptr, 1, sem="release", scope="gpu")
    if POLL_LOAD:
        while _ld_acquire(bar_ptr) < P * count:
            pass
    else:
        while tl.atomic_add(bar_ptr, 0, sem="acquire", scope="gpu") < P * count:
            pass
    tl.debug_barrier()


@triton.jit
def _add_ln_rows(pid, acc_ptr, res_ptr, b_ptr, g_ptr, be_ptr, dst_ptr, len_ptr, T, TT, MT,
                 H: tl.constexpr, EPS: tl.constexpr, BM: tl.constexpr, BLOCK_H: tl.constexpr, P: tl.constexpr):  # fmt: skip
    """A LayerNorm phase: dst = LN(acc (fp32) + res + b) * valid, this program's row tiles."""
    cols = tl.arange(0, BLOCK_H)
    col_ok = cols < H
    for mt in range(pid, MT, P):
        rows, exists, valid, _, _, _ = _rows(len_ptr, mt, T, TT, BM)
        msk = exists[:, None] & col_ok[None, :]
        v = tl.load(acc_ptr + rows[:, None] * H + cols[None, :], mask=msk, other=0.0)
        v += tl.load(res_ptr + rows[:, None] * H + cols[None, :], mask=msk, other=0.0).to(tl.float32)
        v += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        y = tl.where(valid[:, None], _ln(v, cols, g_ptr, be_ptr, H, EPS), 0.0)
        tl.store(dst_ptr + rows[:, None] * H + cols[None, :], y.to(tl.float16), mask=msk)


@triton.jit
def _barriers_kernel(bar_ptr, N, P: tl.constexpr, POLL_LOAD: tl.constexpr):
    """N grid barriers and nothing else: what one costs, against a kernel boundary in a CUDA graph."""
    for i in range(N):
        _barrier(bar_ptr, i + 1, P, POLL_LOAD)


@triton.jit
def _touch_kernel(bar_ptr):
    """Each program adds 1: a kernel boundary's cost in a CUDA graph, with as little work."""
    tl.atomic_add(bar_ptr, 1, sem="relaxed")


@triton.jit
def _rows(len_ptr, mt, T, TT, BM: tl.constexpr):
    """Row tile mt of the (B * T) rows: flat row indices, whether each row exists, whether it is valid."""
    b = mt // TT
    t = (mt - b * TT) * BM + tl.arange(0, BM)
    length = tl.load(len_ptr + b)
    return b * T + t, t < T, t < length, b, t, length


@triton.jit
def _ln(v, cols, g_ptr, be_ptr, H: tl.constexpr, EPS: tl.constexpr):
    col_ok = cols < H
    v = tl.where(col_ok[None, :], v, 0.0)
    mean = tl.sum(v, 1) / H
    d = tl.where(col_ok[None, :], v - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, 1) / H + EPS)
    g = tl.load(g_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    be = tl.load(be_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    return d * rstd[:, None] * g[None, :] + be[None, :]


@triton.jit
def _fft_stack_kernel(
    out_ptr, len_ptr, qkv_ptr, fc_ptr, y_ptr, hid_ptr, w2acc_ptr, bar_ptr,
    wqkv_ptr, bqkv_ptr, wfc_ptr, bfc_ptr, g1_ptr, be1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, g2_ptr, be2_ptr,
    B, T, LO, HI,
    L: tl.constexpr, H: tl.constexpr, NH: tl.constexpr, DK: tl.constexpr, D: tl.constexpr,
    KS: tl.constexpr, PAD: tl.constexpr, EPS: tl.constexpr, QK_SCALE: tl.constexpr,
    BM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_T: tl.constexpr, BN1: tl.constexpr, KC: tl.constexpr,
    P: tl.constexpr, PREFETCH: tl.constexpr, LINES: tl.constexpr, POLL_LOAD: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    TT = tl.cdiv(T, BM)
    MT = B * TT
    QN: tl.constexpr = NH * 3 * DK
    HC: tl.constexpr = 128  # fc / LN column chunk
    NHC: tl.constexpr = (H + HC - 1) // HC
    cols_h = tl.arange(0, BLOCK_H)
    hmask = cols_h < H
    n_bar = 0
    for l in range(L):
        wqkv = wqkv_ptr + l * QN * H
        wfc = wfc_ptr + l * H * NH * DK
        w1 = w1_ptr + l * KS * D * H
        w2 = w2_ptr + l * KS * H * D
        p0 = l * 6
        # ---- phase 0: qkv = X @ Wqkv^T + b; zero FC -------------------------------------------------
        if LO <= p0 and p0 <= HI:  # noqa: PLR1716 - Triton has no chained comparisons
            _prefetch(wfc, H * NH * DK, pid, P, LINES, PREFETCH)
            _prefetch(w1, KS * D * H, pid, P, LINES, PREFETCH)
            for item in range(pid, MT * (QN // 64), P):
                mt = item // (QN // 64)
                n0 = (item % (QN // 64)) * 64
                rows, exists, valid, b, t, length = _rows(len_ptr, mt, T, TT, BM)
                x = tl.load(
                    out_ptr + rows[:, None] * H + cols_h[None, :],
                    mask=exists[:, None] & hmask[None, :],
                    other=0.0,
                )
                n = n0 + tl.arange(0, 64)
                w = tl.load(wqkv + n[:, None] * H + cols_h[None, :], mask=hmask[None, :], other=0.0)
                acc = tl.dot(x, w.T) + tl.load(bqkv_ptr + l * QN + n).to(tl.float32)[None, :]
                tl.store(qkv_ptr + rows[:, None] * QN + n[None, :], acc.to(tl.float16), mask=exists[:, None])
                zc = n0 + tl.arange(0, 64)
                tl.store(
                    fc_ptr + rows[:, None] * H + zc[None, :],
                    tl.zeros((BM, 64), tl.float32),
                    mask=exists[:, None] & (zc < H)[None, :],
                )
            if p0 < HI:
                n_bar += 1
                _barrier(bar_ptr, n_bar, P, POLL_LOAD)
        # ---- phase 1: FC += attention_h @ Wfc[:, h]^T; zero W2 -----------------------------------------
        if LO <= p0 + 1 and p0 + 1 <= HI:
            for item in range(pid, MT * NH * NHC, P):
                mt = item // (NH * NHC)
                h = (item // NHC) % NH
                c0 = (item % NHC) * HC
                rows, exists, valid, b, t, length = _rows(len_ptr, mt, T, TT, BM)
                d = tl.arange(0, DK)
                q = tl.load(
                    qkv_ptr + rows[:, None] * QN + (h * 3 * DK + d)[None, :], mask=exists[:, None], other=0.0
                )
                m = tl.full((BM,), float("-inf"), tl.float32)
                den = tl.zeros((BM,), tl.float32)
                o = tl.zeros((BM, DK), tl.float32)
                for k0 in range(0, length, BLOCK_T):  # online softmax over key blocks, keys < length
                    keys = k0 + tl.arange(0, BLOCK_T)
                    kv_rows = b * T + keys
                    key_ok = keys < length
                    k = tl.load(
                        qkv_ptr + kv_rows[:, None] * QN + (h * 3 * DK + DK + d)[None, :],
                        mask=key_ok[:, None],
                        other=0.0,
                    )
                    v = tl.load(
                        qkv_ptr + kv_rows[:, None] * QN + (h * 3 * DK + 2 * DK + d)[None, :],
                        mask=key_ok[:, None],
                        other=0.0,
                    )
                    s = tl.dot(q, k.T) * QK_SCALE
                    s = tl.where(key_ok[None, :], s, float("-inf"))
                    m_new = tl.maximum(m, tl.max(s, 1))
                    alpha = tl.exp2(m - m_new)
                    p = tl.exp2(s - m_new[:, None])
                    den = den * alpha + tl.sum(p, 1)
                    o = o * alpha[:, None] + tl.dot(p.to(tl.float16), v)
                    m = m_new
                o = o / tl.maximum(den, 1e-30)[:, None]
                o = tl.where(valid[:, None], o, 0.0).to(tl.float16)
                c = c0 + tl.arange(0, HC)
                c_ok = c < H
                wf = tl.load(
                    wfc + c[:, None] * (NH * DK) + (h * DK + d)[None, :], mask=c_ok[:, None], other=0.0
                )
                part = tl.dot(o, wf.T)
                tl.atomic_add(
                    fc_ptr + rows[:, None] * H + c[None, :],
                    part,
                    mask=exists[:, None] & c_ok[None, :],
                    sem="relaxed",
                )
                if h == 0:
                    tl.store(
                        w2acc_ptr + rows[:, None] * H + c[None, :],
                        tl.zeros((BM, HC), tl.float32),
                        mask=exists[:, None] & c_ok[None, :],
                    )
            if p0 + 1 < HI:
                n_bar += 1
                _barrier(bar_ptr, n_bar, P, POLL_LOAD)
        # ---- phase 2: Y = LN1(FC + b_fc + X) * valid --------------------------------------------------
        if LO <= p0 + 2 and p0 + 2 <= HI:
            _prefetch(w2, KS * H * D, pid, P, LINES, PREFETCH)
            _add_ln_rows(pid, fc_ptr, out_ptr, bfc_ptr + l * H, g1_ptr + l * H, be1_ptr + l * H, y_ptr, len_ptr, T, TT, MT, H, EPS, BM, BLOCK_H, P)  # fmt: skip
            if p0 + 2 < HI:
                n_bar += 1
                _barrier(bar_ptr, n_bar, P, POLL_LOAD)
        # ---- phase 3: HID = relu(conv(Y, W1) + b1) * valid --------------------------------------------
        if LO <= p0 + 3 and p0 + 3 <= HI:
            for item in range(pid, MT * (D // BN1), P):
                mt = item // (D // BN1)
                n = (item % (D // BN1)) * BN1 + tl.arange(0, BN1)
                rows, exists, valid, b, t, length = _rows(len_ptr, mt, T, TT, BM)
                acc = tl.zeros((BM, BN1), tl.float32)
                for j in tl.static_range(KS):
                    src = t + (j - PAD)
                    ok = (src >= 0) & (src < T)
                    a = tl.load(
                        y_ptr + (rows + (j - PAD))[:, None] * H + cols_h[None, :],
                        mask=ok[:, None] & hmask[None, :],
                        other=0.0,
                    )
                    w = tl.load(
                        w1 + j * D * H + n[:, None] * H + cols_h[None, :], mask=hmask[None, :], other=0.0
                    )
                    acc = tl.dot(a, w.T, acc)
                acc += tl.load(b1_ptr + l * D + n).to(tl.float32)[None, :]
                acc = tl.where(valid[:, None], tl.maximum(acc, 0.0), 0.0)
                tl.store(hid_ptr + rows[:, None] * D + n[None, :], acc.to(tl.float16), mask=exists[:, None])
            if p0 + 3 < HI:
                n_bar += 1
                _barrier(bar_ptr, n_bar, P, POLL_LOAD)
        # ---- phase 4: W2 += conv(HID, W2), one tap and K chunk per item -------------------------------
        if LO <= p0 + 4 and p0 + 4 <= HI:
            if l + 1 < L:
                _prefetch(wqkv + QN * H, QN * H, pid, P, LINES, PREFETCH)
            for item in range(pid, MT * (H // 64) * KS * (D // KC), P):
                mt = item // ((H // 64) * KS * (D // KC))
                r = item % ((H // 64) * KS * (D // KC))
                n = (r // (KS * (D // KC))) * 64 + tl.arange(0, 64)
                j = (r // (D // KC)) % KS
                kk = (r % (D // KC)) * KC + tl.arange(0, KC)
                rows, exists, valid, b, t, length = _rows(len_ptr, mt, T, TT, BM)
                src = t + (j - PAD)
                ok = (src >= 0) & (src < T)
                a = tl.load(
                    hid_ptr + (rows + (j - PAD))[:, None] * D + kk[None, :], mask=ok[:, None], other=0.0
                )
                w = tl.load(w2 + j * H * D + n[:, None] * D + kk[None, :])
                part = tl.dot(a, w.T)
                tl.atomic_add(
                    w2acc_ptr + rows[:, None] * H + n[None, :], part, mask=exists[:, None], sem="relaxed"
                )
            if p0 + 4 < HI:
                n_bar += 1
                _barrier(bar_ptr, n_bar, P, POLL_LOAD)
        # ---- phase 5: X = LN2(W2 + b2 + Y) * valid ----------------------------------------------------
        if LO <= p0 + 5 and p0 + 5 <= HI:
            _add_ln_rows(pid, w2acc_ptr, y_ptr, b2_ptr + l * H, g2_ptr + l * H, be2_ptr + l * H, out_ptr, len_ptr, T, TT, MT, H, EPS, BM, BLOCK_H, P)  # fmt: skip
            if p0 + 5 < HI:
                n_bar += 1
                _barrier(bar_ptr, n_bar, P, POLL_LOAD)


# ---------------------------------------------------------------------------------------------
# Launcher, weights, reference
# ---------------------------------------------------------------------------------------------
def stack_weights(layers) -> dict[str, torch.Tensor]:
    """The FFT blocks' weights stacked per layer, in the kernel's layouts (fp16, contiguous)."""
    get = {
        "wqkv": lambda b: b.slf_attn.linear.weight,
        "bqkv": lambda b: b.slf_attn.linear.bias,
        "wfc": lambda b: b.slf_attn.fc.weight,
        "bfc": lambda b: b.slf_attn.fc.bias,
        "g1": lambda b: b.slf_attn.layer_norm.weight,
        "be1": lambda b: b.slf_attn.layer_norm.bias,
        "w1": lambda b: b.pos_ffn.w_1.weight.permute(2, 0, 1),
        "b1": lambda b: b.pos_ffn.w_1.bias,
        "w2": lambda b: b.pos_ffn.w_2.weight.permute(2, 0, 1),
        "b2": lambda b: b.pos_ffn.w_2.bias,
        "g2": lambda b: b.pos_ffn.layer_norm.weight,
        "be2": lambda b: b.pos_ffn.layer_norm.bias,
    }
    return {k: torch.stack([f(b).detach() for b in layers]).half().contiguous() for k, f in get.items()}


class FFTStack:
    """Buffers and launch of the kernel for fixed (B, T); `run(x, lengths)` returns the side's output."""

    def __init__(
        self,
        W,
        B,
        T,
        n_head,
        d_k,
        eps,
        bm=16,
        bn1=32,
        kc=256,
        warps=8,
        block_t=64,
        programs=None,
        prefetch=True,
        poll_load=True,
    ):
        dev = W["wqkv"].device
        self.W, self.B, self.T = W, B, T
        L, D, H = W["w1"].shape[0], W["w1"].shape[2], W["w1"].shape[3]
        self.L, self.H, self.D, self.KS = L, H, D, W["w1"].shape[1]
        self.nh, self.dk, self.eps = n_head, d_k, eps
        self.bm, self.bn1, self.kc, self.warps, self.block_t = bm, bn1, kc, warps, block_t
        M = B * T
        f16, f32 = torch.float16, torch.float32
        self.out = torch.empty(M, H, device=dev, dtype=f16)
        self.qkv = torch.empty(M, n_head * 3 * d_k, device=dev, dtype=f16)
        self.fc = torch.empty(M, H, device=dev, dtype=f32)
        self.y = torch.empty(M, H, device=dev, dtype=f16)
        self.hid = torch.empty(M, D, device=dev, dtype=f16)
        self.w2acc = torch.empty(M, H, device=dev, dtype=f32)
        self.bar = torch.zeros(1, device=dev, dtype=torch.int32)
        self.cuda = dev.type == "cuda"
        sms = torch.cuda.get_device_properties(dev).multi_processor_count if self.cuda else 4
        self.P = programs or sms
        self.prefetch = prefetch and self.cuda
        self.poll_load = poll_load

    def run(self, x: torch.Tensor, lengths: torch.Tensor, hi: int | None = None) -> torch.Tensor:
        W = self.W
        self.out.copy_(x.reshape(-1, self.H))
        self.bar.zero_()
        last = self.L * PHASES_PER_LAYER - 1 if hi is None else hi
        spans = [(0, last)] if self.cuda else [(p, p) for p in range(last + 1)]
        for lo, hi_ in spans:
            if not self.cuda:
                self.bar.zero_()
            _fft_stack_kernel[(self.P,)](
                self.out, lengths, self.qkv, self.fc, self.y, self.hid, self.w2acc, self.bar,
                W["wqkv"], W["bqkv"], W["wfc"], W["bfc"], W["g1"], W["be1"], W["w1"], W["b1"], W["w2"],
                W["b2"], W["g2"], W["be2"],
                self.B, self.T, lo, hi_,
                L=self.L, H=self.H, NH=self.nh, DK=self.dk, D=self.D, KS=self.KS, PAD=(self.KS - 1) // 2,
                EPS=self.eps, QK_SCALE=math.log2(math.e) / math.sqrt(self.dk),
                BM=self.bm, BLOCK_H=triton.next_power_of_2(self.H),
                BLOCK_T=min(self.block_t, max(16, triton.next_power_of_2(self.T))), BN1=self.bn1, KC=self.kc,
                P=self.P, PREFETCH=self.prefetch, LINES=64, POLL_LOAD=self.poll_load, num_warps=self.warps, num_stages=1,
            )  # fmt: skip
        return self.out.view(self.B, self.T, self.H)


def reference(layers, x, lengths):
    """The model's own FFT blocks (fastspeech/model.py) on x, in x's dtype."""
    T = x.shape[1]
    row_valid = (torch.arange(T, device=x.device)[None, :] < lengths[:, None])[..., None].to(x.dtype)
    for i, layer in enumerate(layers):
        x = layer(x, lengths, row_valid, None, f"layer_stack.{i}")
    return x


def make_side(T: int, B: int, device: str, seed: int = 0):
    from fastspeech.model import FastSpeech, FastSpeechConfig

    torch.manual_seed(seed)
    cfg = FastSpeechConfig()
    model = FastSpeech(cfg).eval().to(device)
    layers = model.phoneme_side.layer_stack
    x = torch.randn(B, T, cfg.d_model, device=device)
    lengths = torch.randint(max(1, T // 2), T + 1, (B,), device=device)
    lengths[0] = T
    return cfg, layers, x, lengths


def check(T: int, B: int, device: str, layers_n: int | None = None) -> float:
    cfg, layers, x, lengths = make_side(T, B, device)
    layers = layers[:layers_n] if layers_n else layers
    W = stack_weights(layers)
    stack = FFTStack(W, B, T, cfg.phoneme_side_head, cfg.d_k, 1e-5)
    with torch.no_grad():
        ref = reference(layers, x.float(), lengths)
        got = direct_launch(lambda: stack.run(x.half(), lengths))().float()
    err = (got - ref).abs().max().item()
    return err


SWEEP = [(16, 64, 256, 8), (16, 32, 512, 8), (16, 32, 256, 4), (16, 64, 512, 4)]  # (bm, bn1, kc, warps)


def time_side(T: int, B: int, sweep: bool, phases: bool) -> list[dict]:
    """Six layers at (B, T): the per-op path (the model's blocks, Inductor as the engine compiles them,
    one CUDA graph) against the fused kernel (one CUDA graph), cold L2; optionally the phases' costs."""
    cfg, layers, x, lengths = make_side(T, B, "cuda")
    layers, xh = layers.half(), x.half()
    W = stack_weights(layers)
    side = partial(FFTStack, W, B, T, cfg.phoneme_side_head, cfg.d_k, 1e-5)
    with torch.no_grad():
        with torch._inductor.config.patch({"triton.enable_pdl": True, "combo_kernels": True}):
            compiled = torch.compile(
                partial(reference, layers, lengths=lengths), fullgraph=True, dynamic=False
            )
            compiled(xh)
            variants = {"per-op (Inductor + CUDA graph)": graph_of(partial(compiled, xh))}
        default = (16, 32, 256, 8)
        for bm, bn1, kc, warps in [default] + (SWEEP if sweep else []):
            for poll_load in (True, False) if (bm, bn1, kc, warps) == default else (True,):
                st = side(bm=bm, bn1=bn1, kc=kc, warps=warps, poll_load=poll_load)
                name = f"fused bm{bm} bn1_{bn1} kc{kc} w{warps}{'' if poll_load else ' atomic poll'}"
                variants[name] = graph_of(partial(st.run, xh, lengths))
        rows = []
        for name, g in variants.items():
            us = time_us(g.replay, reps=100)
            rows.append(
                {"T": T, "B": B, "variant": name, "us": round(us, 1), "per_layer": round(us / len(layers), 2)}
            )
            print(rows[-1], flush=True)
        if phases:  # launches running phases 0..hi: the difference is one phase, its barrier included
            st, prev = side(), 0.0
            for hi in range(PHASES_PER_LAYER * 2):
                g = graph_of(partial(st.run, xh, lengths, hi=hi))
                us = statistics.median(time_us(g.replay, reps=50) for _ in range(3))
                print(f"T={T} phases 0..{hi}: {us:.1f} us (+{us - prev:.1f})", flush=True)
                prev = us
    return rows


def _barriers(bar, n, P, poll_load):
    bar.zero_()
    _barriers_kernel[(P,)](bar, n, P=P, POLL_LOAD=poll_load, num_warps=8)


def _launches(bar, n, P):
    for _ in range(n):
        _touch_kernel[(P,)](bar, num_warps=8)


def time_barriers() -> None:
    """A grid barrier alone (48 in one launch, less none) against a kernel boundary (48 one-step kernels
    in a CUDA graph, less one), one program per SM."""
    P = torch.cuda.get_device_properties(0).multi_processor_count
    bar = torch.zeros(1, device="cuda", dtype=torch.int32)
    k = [time_us(graph_of(partial(_launches, bar, n, P)).replay, reps=100) for n in (1, 48)]
    print(f"kernel boundary ({P} programs, CUDA graph): {(k[1] - k[0]) / 47:.2f} us each", flush=True)
    for poll_load in (True, False):
        t = [time_us(graph_of(partial(_barriers, bar, n, P, poll_load)).replay, reps=100) for n in (0, 48)]
        poll = "acquire-load" if poll_load else "atomic"
        print(f"grid barrier ({P} programs, {poll} poll): {(t[1] - t[0]) / 48:.2f} us each", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", default="32,128,256")
    parser.add_argument("--B", type=int, default=1)
    parser.add_argument("--check", action="store_true", help="only compare with the model's blocks")
    parser.add_argument("--phases", action="store_true", help="also time prefixes of the phases")
    parser.add_argument("--sweep", action="store_true", help="also other tiles (bm, bn1, kc, warps)")
    parser.add_argument("--barriers", action="store_true", help="also time grid barriers alone")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    Ts = [int(t) for t in args.T.split(",")]
    for T in Ts:  # the CPU interpreter checks one layer (six take minutes there)
        err = check(T, args.B, device, None if device == "cuda" else 1)
        print(f"T={T} B={args.B}: max |fused - fp32 blocks| = {err:.4f}", flush=True)
    if args.check or device == "cpu":
        return
    print(environment())
    rows = [row for T in Ts for row in time_side(T, args.B, args.sweep, args.phases)]
    if args.barriers:
        time_barriers()
    print(markdown_table(rows, [(k, k) for k in ("T", "B", "variant", "us", "per_layer")]))


if __name__ == "__main__":
    main()
