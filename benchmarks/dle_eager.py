"""The seed's PyTorch forward, as the baseline every speed-up is measured against.

DLE's `Fastspeech.forward` at inference, batched: bmm attention with `masked_fill(-65504)`,
transposes around cuDNN Conv1d, the length regulator as a Python loop of per-item
`repeat_interleave` + `pad_sequence` (To = the batch's longest prediction, no fixed shape). It reads
the weights of one of our `FastSpeech` models, so both sides compute the same function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from fastspeech.model import FastSpeech


class DLEEager(torch.nn.Module):
    def __init__(self, model: FastSpeech):
        super().__init__()
        self.m = model

    def _side(self, side, n_head: int, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        x = x + side.position(pos)
        non_pad = (pos != 0).unsqueeze(-1).to(x.dtype)
        key_pad = (pos == 0).unsqueeze(1).expand(B, T, T).repeat(n_head, 1, 1)
        for layer in side.layer_stack:
            a, f = layer.slf_attn, layer.pos_ffn
            res = x
            qkv = a.linear(x).view(B, T, n_head, 192).permute(2, 0, 1, 3).reshape(n_head * B, T, 192)
            q, k, v = qkv[..., :64], qkv[..., 64:128], qkv[..., 128:]
            attn = torch.bmm(q, k.transpose(1, 2)) / 8.0
            attn = torch.softmax(attn.masked_fill(key_pad, -65504.0), dim=2)
            out = torch.bmm(attn, v).view(n_head, B, T, 64).permute(1, 2, 0, 3).reshape(B, T, -1)
            x = a.layer_norm(a.fc(out) + res) * non_pad
            res = x
            h = f.w_2(F.relu(f.w_1(x.transpose(1, 2)))).transpose(1, 2)
            x = f.layer_norm(h + res) * non_pad
        return x

    def forward(self, tokens: torch.Tensor, alpha: float = 1.0):
        m = self.m
        pos = torch.where(tokens != 0, torch.arange(1, tokens.shape[1] + 1, device=tokens.device), 0)
        x = self._side(m.phoneme_side, m.cfg.phoneme_side_head, m.word_emb(tokens), pos)
        dp = m.length_regulator.duration_predictor
        h = dp.layer_norm_1(F.relu(dp.conv1d_1((x * (pos != 0)[..., None]).transpose(1, 2))).transpose(1, 2))
        h = dp.layer_norm_2(F.relu(dp.conv1d_2(h.transpose(1, 2))).transpose(1, 2))
        log_dur = (dp.linear_layer(h) * (pos != 0)[..., None]).squeeze(-1)
        duration = torch.clamp_min(torch.exp(log_dur) - 1, 0)
        expanded = []
        for b in range(tokens.shape[0]):  # DLE's loop: data-dependent shapes, a sync per item
            repeats = torch.round(duration[b] * alpha).long()
            expanded.append(torch.repeat_interleave(x[b], repeats, dim=0))
        seq = pad_sequence(expanded, batch_first=True)
        lens = torch.tensor([len(e) for e in expanded], device=tokens.device)
        mel_pos = torch.where(
            torch.arange(seq.shape[1], device=seq.device)[None] < lens[:, None],
            torch.arange(1, seq.shape[1] + 1, device=seq.device)[None],
            0,
        )
        y = self._side(m.mel_side, m.cfg.mel_side_head, seq, mel_pos)
        return m.mel_linear(y), lens
