"""One-off (run 21, H200; python -m benchmarks.kernels.probe_fft_layer_phases): marginal µs of each phase of the persistent fft_layer kernel (prefix launches 0..p)."""

import torch
from benchmarks.kernels.bench_fft_layer import make_stack, graph_us, LAYERS
from kernels.fft_layer import launch_fft_layer, default_blocks

for B, T in ((1, 32), (1, 128), (1, 1024)):
    blocks, x, lengths = make_stack(B, T, torch.float16)
    weights = [
        tuple(
            t.contiguous()
            for t in (
                b.slf_attn.linear.weight,
                b.slf_attn.linear.bias,
                b.slf_attn.fc.weight,
                b.slf_attn.fc.bias,
                b.slf_attn.layer_norm.weight,
                b.slf_attn.layer_norm.bias,
                b.pos_ffn.w_1.weight.permute(2, 0, 1),
                b.pos_ffn.w_1.bias,
                b.pos_ffn.w_2.weight.permute(2, 0, 1),
                b.pos_ffn.w_2.bias,
                b.pos_ffn.layer_norm.weight,
                b.pos_ffn.layer_norm.bias,
            )
        )
        for b in blocks
    ]
    outs = [torch.empty_like(x) for _ in blocks]
    res = {}
    for last in range(-1, 6):

        def run(last=last):
            for w, out in zip(weights, outs):
                if last < 0:
                    torch.zeros(1, dtype=torch.int32, device="cuda")  # the memset alone
                else:
                    launch_fft_layer(x, lengths, w, 2, 1, 1e-5, out, phases=((0, last),))

        with torch.no_grad():
            res[last] = graph_us(run)[0] / LAYERS
    print(B, T, default_blocks(B * T, 384, 1536, 3, 132, torch.float16))
    print("  cumulative µs per layer:", {k: round(v, 2) for k, v in res.items()})
    print("  marginal µs per phase:", {p: round(res[p] - res[p - 1], 2) for p in range(0, 6)}, flush=True)
