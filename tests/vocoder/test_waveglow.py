"""DLE WaveGlow on small random models, against an independent reference of DLE's `infer`.

The reference below follows DLE's structure from the paper: weight norm kept (torch `weight_norm`,
never folded), the 1x1 conv inverted at call time with `torch.inverse` in float32, the mel folded
with `unfold`, the noise z passed in. Checkpoints are written as DLE writes them:
{"state_dict": {"module.<name>": ...}, "epoch": ...}. The 256- and 512-channel variants keep their
channel counts but get fewer flows and layers (loading reads every size from the shapes).
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import requires_cuda
from torch import nn
from torch.nn.utils import weight_norm

from fastspeech.errors import VocoderError
from fastspeech.vocoder import load_vocoder
from fastspeech.vocoder.waveglow import WaveGlow


class RefWN(nn.Module):
    def __init__(self, n_in, n_mel, n_layers, n_channels, kernel):
        super().__init__()
        self.n_layers, self.n_channels = n_layers, n_channels
        self.start = weight_norm(nn.Conv1d(n_in, n_channels, 1))
        self.end = nn.Conv1d(n_channels, 2 * n_in, 1)  # DLE: no weight norm here
        self.in_layers, self.cond_layers, self.res_skip_layers = (
            nn.ModuleList(),
            nn.ModuleList(),
            nn.ModuleList(),
        )
        for i in range(n_layers):
            d = 2**i
            self.in_layers.append(
                weight_norm(
                    nn.Conv1d(n_channels, 2 * n_channels, kernel, dilation=d, padding=(kernel * d - d) // 2)
                )
            )
            self.cond_layers.append(weight_norm(nn.Conv1d(n_mel, 2 * n_channels, 1)))
            out = 2 * n_channels if i < n_layers - 1 else n_channels
            self.res_skip_layers.append(weight_norm(nn.Conv1d(n_channels, out, 1)))

    def forward(self, audio, spect):
        audio = self.start(audio)
        output = 0
        for i in range(self.n_layers):
            in_act = self.in_layers[i](audio) + self.cond_layers[i](spect)
            acts = torch.tanh(in_act[:, : self.n_channels]) * torch.sigmoid(in_act[:, self.n_channels :])
            rs = self.res_skip_layers[i](acts)
            if i < self.n_layers - 1:
                audio = rs[:, : self.n_channels] + audio
                output = output + rs[:, self.n_channels :]
            else:
                output = output + rs
        return self.end(output)


class RefWaveGlow(nn.Module):
    def __init__(self, n_flows, n_group, n_early_every, n_early_size, n_layers, n_channels, kernel=3):
        super().__init__()
        self.n_flows, self.n_group, self.every, self.early = n_flows, n_group, n_early_every, n_early_size
        self.upsample = nn.ConvTranspose1d(80, 80, 1024, stride=256)
        self.WN, self.convinv = nn.ModuleList(), nn.ModuleList()
        n_half, remaining = n_group // 2, n_group
        for k in range(n_flows):
            if k % n_early_every == 0 and k > 0:
                n_half -= n_early_size // 2
                remaining -= n_early_size
            inv = nn.Module()
            inv.conv = nn.Conv1d(remaining, remaining, 1, bias=False)
            w = torch.linalg.qr(torch.randn(remaining, remaining))[0]
            inv.conv.weight.data = (w * (1.0 + 0.1 * torch.rand(remaining))).view(remaining, remaining, 1)
            self.convinv.append(inv)
            self.WN.append(RefWN(n_half, 80 * n_group, n_layers, n_channels, kernel))
        self.remaining = remaining
        with torch.no_grad():  # non-trivial weight norm, a non-zero `end`
            for name, p in self.named_parameters():
                if name.endswith("weight_g"):
                    p.mul_(0.5 + torch.rand(p.shape))
                if ".end." in name:
                    p.normal_(0, 0.05)

    def infer(self, mel, sigma, noise):
        """mel (B, 80, To) -> (B, To * 256); noise(channels, length, salt) -> (B, channels, length)."""
        spect = self.upsample(mel)[:, :, : -(1024 - 256)]
        spect = spect.unfold(2, self.n_group, self.n_group).permute(0, 2, 1, 3)
        spect = spect.contiguous().view(spect.size(0), spect.size(1), -1).permute(0, 2, 1)
        audio = sigma * noise(self.remaining, spect.size(2), 0)
        for k in reversed(range(self.n_flows)):
            n_half = audio.size(1) // 2
            out = self.WN[k](audio[:, :n_half], spect)
            s, b = out[:, n_half:], out[:, :n_half]
            audio = torch.cat([audio[:, :n_half], (audio[:, n_half:] - b) / torch.exp(s)], 1)
            w_inv = self.convinv[k].conv.weight.squeeze().float().inverse()[..., None]
            audio = F.conv1d(audio, w_inv)
            if k % self.every == 0 and k > 0:
                audio = torch.cat([sigma * noise(self.early, spect.size(2), k), audio], 1)
        return audio.permute(0, 2, 1).contiguous().view(audio.size(0), -1)


SIZES = {  # name: (n_flows, n_group, n_early_every, n_early_size, n_layers, n_channels)
    "small": (5, 8, 2, 2, 3, 16),
    "256ch": (3, 8, 2, 2, 2, 256),
    "512ch": (2, 8, 1, 2, 1, 512),
}


def write(tmp_path, size, seed=0):
    torch.manual_seed(seed)
    ref = RefWaveGlow(*SIZES[size]).eval()
    path = tmp_path / f"waveglow_{size}.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}, "epoch": 1}, path)
    return ref, path


@pytest.mark.parametrize("size", list(SIZES))
def test_sigma_zero_equals_the_reference_to_fp32_rounding(tmp_path, size):
    ref, path = write(tmp_path, size)
    voc = load_vocoder(path, sigma=0.0)  # kind detected from the file
    assert isinstance(voc, WaveGlow) and not voc.training
    n_flows, n_group, every, _, layers, channels = SIZES[size]
    assert (voc.cfg.n_flows, voc.cfg.n_group, voc.cfg.n_early_every, voc.cfg.wn_layers, voc.cfg.wn_channels) == (
        n_flows, n_group, every, layers, channels,
    )  # fmt: skip
    mel = torch.randn(2, 6, 80) * 0.5 - 5
    with torch.no_grad():
        want = ref.infer(mel.transpose(1, 2), 0.0, lambda c, n, salt: torch.zeros(2, c, n))
        got = voc(mel)
    assert got.shape == want.shape == (2, 6 * 256)
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want.clamp(-1, 1), rtol=0, atol=2e-5 * max(scale, 1.0))
    assert torch.equal(got, voc(mel))  # deterministic


def test_sigma_noise_is_fixed_and_equals_the_reference_given_the_same_noise(tmp_path):
    ref, path = write(tmp_path, "small")
    voc = load_vocoder(path, "waveglow", sigma=0.6)
    mel = torch.randn(1, 5, 80) * 0.5 - 5

    def noise(c, n, salt):
        return voc.noise(1, c, n, salt, mel)

    with torch.no_grad():
        want = ref.infer(mel.transpose(1, 2), 0.6, noise)
    got = voc(mel)
    torch.testing.assert_close(got, want.clamp(-1, 1), rtol=0, atol=1e-4)
    z = voc.noise(1, 6, 4096, 0, mel)
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05  # standard normal
    assert torch.equal(got, voc(mel))  # the same noise every call


def test_denoiser_subtracts_the_bias_spectrum(tmp_path):
    ref, path = write(tmp_path, "small")
    plain = load_vocoder(path, sigma=0.0)
    voc = load_vocoder(path, sigma=0.0, denoiser_strength=0.5)
    mel = torch.randn(1, 8, 80) * 0.5 - 5
    window = torch.hann_window(1024)
    with torch.no_grad():  # DLE's Denoiser: the bias is the model's output for a zero mel, frame 0
        bias = ref.infer(torch.zeros(1, 80, 88), 0.0, lambda c, n, s: torch.zeros(1, c, n))
        bias_spec = torch.stft(bias, 1024, 256, 1024, window, return_complex=True).abs()[0, :, :1]
        wav = ref.infer(mel.transpose(1, 2), 0.0, lambda c, n, s: torch.zeros(1, c, n))
        spec = torch.stft(wav, 1024, 256, 1024, window, return_complex=True)
        mag = (spec.abs() - 0.5 * bias_spec).clamp_min(0)
        want = torch.istft(torch.polar(mag, spec.angle()), 1024, 256, 1024, window, length=wav.shape[1])
    got = voc(mel)
    torch.testing.assert_close(got, want.clamp(-1, 1), rtol=0, atol=1e-4)
    assert not torch.allclose(got, plain(mel))


def test_padding_frames_are_silence_and_the_wav_is_zero_there(tmp_path):
    _, path = write(tmp_path, "small")
    voc = load_vocoder(path, sigma=0.0)
    mel = torch.randn(1, 7, 80) * 0.5 - 5
    garbage = torch.cat([mel, torch.randn(1, 5, 80)], 1)
    silence = torch.cat([mel, torch.full((1, 5, 80), torch.log(torch.tensor(1e-5)).item())], 1)
    lens = torch.tensor([7])
    wav = voc(garbage, lens)
    assert wav.shape == (1, 12 * 256) and wav[0, 7 * 256 :].abs().max() == 0
    torch.testing.assert_close(wav, voc(silence, lens), rtol=0, atol=0)


@pytest.mark.parametrize("damage", ["truncated", "missing", "shape", "hifigan_as_waveglow"])
def test_wrong_file_is_one_line(tmp_path, damage):
    _, path = write(tmp_path, "small")
    obj = torch.load(path, weights_only=True)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
        match = "cannot read vocoder checkpoint"
    elif damage == "missing":
        del obj["state_dict"]["module.WN.1.cond_layers.0.bias"]
        match = "does not match DLE WaveGlow .*1 missing: WN.1.cond_layers.0.bias"
    elif damage == "shape":
        obj["state_dict"]["module.upsample.bias"] = torch.zeros(7)
        match = r"wrong shape: upsample.bias \(7,\) \(expected \(80,\)\)"
    else:
        obj = {"generator": {"conv_pre.weight": torch.zeros(1)}}
        match = "is not a DLE WaveGlow checkpoint"
    if damage != "truncated":
        torch.save(obj, path)
    with pytest.raises(VocoderError, match=match) as info:
        load_vocoder(path, "waveglow")
    assert "\n" not in str(info.value)


@requires_cuda
@pytest.mark.cuda
# fp32: cuDNN convolutions use TF32 under torch's default (torch.backends.cudnn.allow_tf32), and
# 12 flows of 8 dilated layers add it up: 2.6e-4 measured on an H200 against the CPU reference.
@pytest.mark.parametrize("precision, atol", [("fp32", 1e-3), ("fp16", 3e-2), ("bf16", 2e-1)])
def test_cuda_every_precision_against_the_reference(tmp_path, precision, atol):
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    ref, path = write(tmp_path, "256ch")
    voc = load_vocoder(path, sigma=0.0).on("cuda", dtype)
    mel = torch.randn(1, 20, 80) * 0.5 - 5
    with torch.no_grad():
        want = ref.infer(mel.transpose(1, 2), 0.0, lambda c, n, s: torch.zeros(1, c, n)).clamp(-1, 1)
        got = voc(mel.cuda().to(dtype))
    assert got.dtype == torch.float32
    err = float((got.cpu() - want).abs().max())
    assert err <= atol * max(1.0, float(want.abs().max())), err
