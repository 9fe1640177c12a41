"""HiFi-GAN from both public layouts, on small random generators, against an independent reference.

The reference below is written from the paper and the originals' structure, not from our module:
weight norm kept as torch's `weight_norm` (never folded), the residual blocks in one flat list as
jik876/hifi-gan keeps them, channels first. Checkpoints are written in each public layout by the test:
- DLE: {"generator": state dict with resblocks.<i>.<j>., "config": {...}, "train_setup": {...}}
- original: g_XXXXXXXX = {"generator": state dict with resblocks.<i*K+j>.}, config.json beside.
Equal to fp32 rounding: atol 1e-5 on tanh output.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import requires_cuda
from torch import nn
from torch.nn.utils import weight_norm

from fastspeech.errors import VocoderError
from fastspeech.vocoder import load_vocoder
from fastspeech.vocoder.hifigan import HiFiGAN

SMALL = {  # prod(upsample_rates) = 256: one mel frame -> 256 samples, as DLE's hop
    "1": {
        "resblock": "1",
        "upsample_rates": [8, 8, 4],
        "upsample_kernel_sizes": [16, 16, 8],
        "upsample_initial_channel": 32,
        "resblock_kernel_sizes": [3, 5],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
    },
    "2": {
        "resblock": "2",
        "upsample_rates": [16, 16],
        "upsample_kernel_sizes": [32, 32],
        "upsample_initial_channel": 16,
        "resblock_kernel_sizes": [3, 5, 7],
        "resblock_dilation_sizes": [[1, 2], [2, 6], [3, 12]],
    },
}


class RefGenerator(nn.Module):
    """HiFi-GAN's generator, the original's way: weight-normed convs, flat resblock list."""

    def __init__(self, h):
        super().__init__()
        self.h, self.K = h, len(h["resblock_kernel_sizes"])
        C = h["upsample_initial_channel"]
        self.conv_pre = weight_norm(nn.Conv1d(80, C, 7, 1, padding=3))
        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(h["upsample_rates"], h["upsample_kernel_sizes"])):
            self.ups.append(
                weight_norm(nn.ConvTranspose1d(C // 2**i, C // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            )
        self.resblocks = nn.ModuleList()
        for i in range(len(self.ups)):
            ch = C // 2 ** (i + 1)
            for k, ds in zip(h["resblock_kernel_sizes"], h["resblock_dilation_sizes"]):
                block = nn.Module()
                if h["resblock"] == "1":
                    block.convs1 = nn.ModuleList(
                        weight_norm(nn.Conv1d(ch, ch, k, 1, dilation=d, padding=(k * d - d) // 2)) for d in ds
                    )
                    block.convs2 = nn.ModuleList(
                        weight_norm(nn.Conv1d(ch, ch, k, 1, dilation=1, padding=(k - 1) // 2)) for _ in ds
                    )
                else:
                    block.convs = nn.ModuleList(
                        weight_norm(nn.Conv1d(ch, ch, k, 1, dilation=d, padding=(k * d - d) // 2)) for d in ds
                    )
                self.resblocks.append(block)
        self.conv_post = weight_norm(nn.Conv1d(ch, 1, 7, 1, padding=3))
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():  # weight norm with g != ||v||, so folding it matters
            for name, p in self.named_parameters():
                if name.endswith("weight_g"):
                    p.mul_(0.5 + torch.rand(p.shape, generator=g))

    def block(self, b, x):
        if self.h["resblock"] == "1":
            for c1, c2 in zip(b.convs1, b.convs2):
                xt = c1(F.leaky_relu(x, 0.1))
                xt = c2(F.leaky_relu(xt, 0.1))
                x = xt + x
        else:
            for c in b.convs:
                x = c(F.leaky_relu(x, 0.1)) + x
        return x

    def forward(self, x):  # x: (B, 80, To)
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, 0.1))
            xs = None
            for j in range(self.K):
                y = self.block(self.resblocks[i * self.K + j], x)
                xs = y if xs is None else xs + y
            x = xs / self.K
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


def nested(state, K):
    """The flat (original) names -> DLE's nested resblocks.<i>.<j>."""
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] == "resblocks":
            n = int(parts[1])
            k = ".".join(["resblocks", str(n // K), str(n % K), *parts[2:]])
        out[k] = v
    return out


def write(tmp_path, h, fmt, seed=0):
    torch.manual_seed(seed)
    ref = RefGenerator(h).eval()
    state = ref.state_dict()
    if fmt == "dle":
        path = tmp_path / "hifigan_gen_checkpoint_10.pt"
        train_setup = {"sampling_rate": 22050, "hop_length": 256, "num_mels": 80, "filter_length": 1024}
        sd = {f"module.{k}": v for k, v in nested(state, len(h["resblock_kernel_sizes"])).items()}
        torch.save({"generator": sd, "config": h, "train_setup": train_setup, "epoch": 10}, path)
    else:
        path = tmp_path / "g_00000010"
        if fmt == "parametrized":  # torch.nn.utils.parametrizations.weight_norm's names (newer trainings)
            state = {
                k.replace("weight_g", "parametrizations.weight.original0").replace(
                    "weight_v", "parametrizations.weight.original1"
                ): v
                for k, v in state.items()
            }
        torch.save({"generator": state}, path)
        (tmp_path / "config.json").write_text(
            json.dumps({**h, "sampling_rate": 22050, "hop_size": 256, "num_mels": 80})
        )
    return ref, path


@pytest.mark.parametrize("fmt", ["dle", "original", "parametrized"])
@pytest.mark.parametrize("resblock", ["1", "2"])
def test_equals_the_reference_to_fp32_rounding(tmp_path, fmt, resblock):
    ref, path = write(tmp_path, SMALL[resblock], fmt)
    voc = load_vocoder(path)  # kind detected from the file
    assert isinstance(voc, HiFiGAN) and not voc.training
    assert voc.settings["format"] == ("dle" if fmt == "dle" else "original")
    assert not any("weight_g" in k or "weight_v" in k for k in voc.state_dict())  # folded at load
    mel = torch.randn(2, 13, 80) - 4
    with torch.no_grad():
        want = ref(mel.transpose(1, 2))[:, 0]
        got = voc(mel)
    assert got.shape == (2, 13 * 256) and want.shape == got.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_padding_is_silence_and_zero_wav(tmp_path):
    ref, path = write(tmp_path, SMALL["2"], "dle")
    voc = load_vocoder(path, "hifigan")
    mel = torch.randn(1, 10, 80) - 4
    padded = torch.cat([mel, torch.randn(1, 6, 80)], 1)  # garbage past the true length
    wav = voc(padded, torch.tensor([10]))
    assert wav.shape == (1, 16 * 256) and wav[0, 10 * 256 :].abs().max() == 0
    silent = torch.cat([mel, torch.full((1, 6, 80), torch.log(torch.tensor(1e-5)).item())], 1)
    with torch.no_grad():
        torch.testing.assert_close(
            wav[0, : 10 * 256], ref(silent.transpose(1, 2))[0, 0, : 10 * 256], rtol=0, atol=1e-5
        )


def test_variant_named_or_recognized_by_shape(tmp_path):
    """An original g_ file without config.json: v2 by name, and by its shapes alone."""
    v2 = {
        "resblock": "1",
        "upsample_rates": [8, 8, 2, 2],
        "upsample_kernel_sizes": [16, 16, 4, 4],
        "upsample_initial_channel": 128,
        "resblock_kernel_sizes": [3, 7, 11],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    }
    ref, path = write(tmp_path, v2, "original")
    (tmp_path / "config.json").unlink()
    mel = torch.randn(1, 4, 80) - 4
    with torch.no_grad():
        want = ref(mel.transpose(1, 2))[:, 0]
    for voc in (load_vocoder(path, variant="v2"), load_vocoder(path)):
        assert voc.cfg.upsample_initial_channel == 128
        torch.testing.assert_close(voc(mel), want, rtol=0, atol=1e-5)
    with pytest.raises(VocoderError, match="does not match") as info:
        load_vocoder(path, variant="v1")  # v1's 512 channels: wrong shapes, listed
    assert "wrong shape" in str(info.value) and "\n" not in str(info.value)


def test_no_config_and_no_matching_variant_says_what_to_pass(tmp_path):
    _, path = write(tmp_path, SMALL["1"], "original")
    (tmp_path / "config.json").unlink()
    with pytest.raises(VocoderError, match="config.json beside it, or pass vocoder.config"):
        load_vocoder(path)


@pytest.mark.parametrize(
    "damage", ["truncated", "missing", "unexpected", "shape", "not_torch", "waveglow_as_hifigan"]
)
def test_wrong_file_is_one_line_naming_format_and_finding(tmp_path, damage):
    _, path = write(tmp_path, SMALL["2"], "dle")
    obj = torch.load(path, weights_only=True)
    sd = obj["generator"]
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        match = "cannot read vocoder checkpoint.*truncated"
    elif damage == "missing":
        del sd["module.conv_post.bias"]
        match = "1 missing: conv_post.bias"
    elif damage == "unexpected":
        sd["module.extra.weight"] = torch.zeros(1)
        match = "1 unexpected: extra.weight"
    elif damage == "shape":
        sd["module.conv_pre.bias"] = torch.zeros(3)
        match = r"wrong shape: conv_pre.bias \(3,\) \(expected \(16,\)\)"
    elif damage == "not_torch":
        path.write_text("hello")
        match = "cannot read vocoder checkpoint"
    else:
        obj = {"state_dict": {"WN.0.start.weight": torch.zeros(1)}}
        match = "is not a HiFi-GAN generator"
    if damage in ("missing", "unexpected", "shape", "waveglow_as_hifigan"):
        torch.save(obj, path)
    with pytest.raises(VocoderError, match=match) as info:
        load_vocoder(path, "hifigan")
    assert "\n" not in str(info.value)
    if damage in ("missing", "unexpected", "shape"):
        assert "HiFi-GAN dle generator" in str(info.value)  # names the format it expected


def test_unknown_file_and_other_audio_settings(tmp_path):
    path = tmp_path / "something.pt"
    torch.save({"weights": {"a.weight": torch.zeros(2)}}, path)
    with pytest.raises(
        VocoderError, match="neither HiFi-GAN .* nor DLE WaveGlow.*found top-level keys \\['weights'\\]"
    ):
        load_vocoder(path)
    _, g = write(tmp_path, SMALL["2"], "original")
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "sampling_rate": 24000}))
    with pytest.raises(VocoderError, match="sampling_rate=24000 \\(ours 22050\\)"):
        load_vocoder(g)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("precision, atol", [("fp32", 1e-4), ("fp16", 2e-2), ("bf16", 1e-1)])
def test_cuda_every_precision_against_the_reference(tmp_path, precision, atol):
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    ref, path = write(tmp_path, SMALL["1"], "dle")
    voc = load_vocoder(path).on("cuda", dtype)
    mel = torch.randn(2, 40, 80) - 4
    with torch.no_grad():
        want = ref(mel.transpose(1, 2))[:, 0]
        got = voc(mel.cuda().to(dtype), torch.tensor([40, 25], device="cuda"))
    assert got.dtype == torch.float32 and got.shape == (2, 40 * 256)
    torch.testing.assert_close(got[0].cpu(), want[0], rtol=0, atol=atol)
    assert got[1, 25 * 256 :].abs().max() == 0
