"""Train the demo voice: DLE's FastSpeech, smaller (conf/model/demo.yaml), on the eSpeak NG corpus.

    python scripts/train_demo.py --out results/demo                  # GPU: 8 minutes, bf16 autocast
    python scripts/train_demo.py --device cpu --limit 8 --steps 6 --max-frames 2000 --out /tmp/demo  # CPU smoke
    python scripts/train_demo.py --evaluate fastspeech/assets/demo_voice.pt --plot docs/demo_voice.png

The corpus (`data/demo_corpus.npz`, from scripts/make_corpus.py) already holds token ids, so this
script needs only torch, numpy, PyYAML and this repository (`fastspeech.model`, `kernels`,
`fastspeech.checkpoint`): it runs on the GPU machine as is.

The recipe is DLE's (reference section 1.8), shortened: teacher-forced durations from the corpus;
loss = mel MSE over valid frames + duration MSE on log(d + 1) over valid tokens; Adam (0.9, 0.98,
1e-9) with the Noam schedule written with its peak, lr(s) = peak * min(s / warmup, sqrt(warmup / s))
(DLE's d_model^-0.5 factor is peak * sqrt(warmup)); gradient clipping at 1; dropout 0.1 on the
output of every FFT block (DLE drops out inside the blocks; our model is inference-only, so a
forward hook adds it here). Batches hold utterances of similar length, up to `--max-frames` frames.

The model's forward is inference-only, so training calls its parts: `word_emb`, `phoneme_side`,
`length_regulator.duration_predictor`, `kernels.regulate_length` with the corpus durations,
`mel_side`, `mel_linear`. The two custom ops have no autograd formulas of their own; this script
registers them (`register_op_gradients`: the positional encoding is a constant, so its gradient is
the identity; the length regulator's gradient sums each token's frames back onto the token).

Outputs in `--out`: demo_voice.pt (DLE format: {'step', 'model', 'optim'}, `module.` prefix, fp32;
the best held-out checkpoint), eval.json (held-out metrics), train.log.
"""

from __future__ import annotations

import argparse
import json
import logging
import lzma
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kernels
from fastspeech.checkpoint import load_checkpoint, save_checkpoint
from fastspeech.model import FastSpeech, FastSpeechConfig

log = logging.getLogger("train_demo")
LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"


# ---------------------------------------------------------------------------------------------
# Gradients for the two custom ops
# ---------------------------------------------------------------------------------------------
def register_op_gradients() -> None:
    """Autograd formulas for `fastspeech::add_pos_enc` and `fastspeech::regulate_length`."""

    def pos_enc_backward(ctx, grad):
        return grad, None  # x + PE(t) with PE constant

    def regulate_setup(ctx, inputs, output):
        x, durations, _ = inputs
        ctx.save_for_backward(durations)
        ctx.n_tokens = x.shape[1]

    def regulate_backward(ctx, grad):
        (durations,) = ctx.saved_tensors
        B, To, H = grad.shape
        ends = durations.clamp_min(0).long().cumsum(1)  # (B, Ti) exclusive end frame of each token
        frames = torch.arange(To, device=grad.device).expand(B, To).contiguous()
        token = torch.searchsorted(ends, frames, right=True).clamp_max(ctx.n_tokens - 1)  # (B, To)
        grad = grad * (frames < ends[:, -1:])[..., None].to(grad.dtype)  # frames past the total hold zeros
        gx = grad.new_zeros(B, ctx.n_tokens, H).scatter_add_(1, token[..., None].expand(B, To, H), grad)
        return gx, None, None

    torch.library.register_autograd("fastspeech::add_pos_enc", pos_enc_backward)
    torch.library.register_autograd("fastspeech::regulate_length", regulate_backward, setup_context=regulate_setup)


def teacher_forward(model: FastSpeech, tokens: torch.Tensor, durations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's forward with given durations (B, Ti) -> (mel (B, To, M), log-duration prediction (B, Ti)).

    To = the longest total duration in the batch. Same parts and masks as `FastSpeech.forward`, so
    with the durations it predicts (eval mode) this returns its mel.
    """
    token_lens = (tokens != 0).sum(1)
    x = model.word_emb(tokens)  # (B, Ti, H)
    x = model.phoneme_side(x, token_lens, None, "phoneme_side")
    row_valid = (torch.arange(tokens.shape[1], device=tokens.device)[None, :] < token_lens[:, None])[..., None]
    log_dur = model.length_regulator.duration_predictor(x, token_lens, row_valid.to(x.dtype))  # (B, Ti)
    mel_lens = durations.sum(1)
    To = int(mel_lens.max())
    x = kernels.regulate_length(x, durations, To)  # (B, To, H)
    x = model.mel_side(x, mel_lens, None, "mel_side")
    valid = torch.arange(To, device=x.device)[None, :, None] < mel_lens[:, None, None]
    return model.mel_linear(x) * valid, log_dur


def add_dropout(model: FastSpeech, p: float) -> None:
    """Dropout on the embedding and on every FFT block's output, in training mode only."""
    if p <= 0:
        return

    def hook(module, args, output):
        return F.dropout(output, p, module.training)

    model.word_emb.register_forward_hook(hook)
    for side in (model.phoneme_side, model.mel_side):
        for layer in side.layer_stack:
            layer.register_forward_hook(hook)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
@dataclass
class Batch:
    tokens: torch.Tensor  # (B, Ti) int64, 0 = padding
    durations: torch.Tensor  # (B, Ti) int64, 0 at padding
    mels: torch.Tensor  # (B, To, M) float32, 0 at padding
    mel_lens: torch.Tensor  # (B,)


class Corpus:
    """The npz of scripts/make_corpus.py, held on `device`; `batch(ids)` pads a set of utterances."""

    def __init__(self, path: Path, device: torch.device):
        z = np.load(path)
        self.texts = [str(t) for t in z["texts"]]
        q = np.frombuffer(lzma.decompress(z["mels_xz"].tobytes()), dtype=np.uint8)
        self.mel_bins = int(z["mel_bins"])
        self.mels_q = torch.from_numpy(q.reshape(-1, self.mel_bins).copy()).to(device)  # (sum To, M) uint8
        self.mel_lo, self.mel_step = float(z["mel_lo"]), float(z["mel_step"])
        self.tokens = torch.from_numpy(z["tokens"].astype(np.int64)).to(device)
        self.durations = torch.from_numpy(z["durations"].astype(np.int64)).to(device)
        self.tok_off = z["token_offsets"]
        self.mel_off = z["mel_offsets"]
        self.heldout = z["heldout"]
        self.n_frames = np.diff(self.mel_off)
        self.n_tokens = np.diff(self.tok_off)
        self.device = device
        # Per-bin mean of the training mels: the output bias starts there (silence is -11.5, far from 0).
        train = torch.from_numpy(np.repeat(~self.heldout, self.n_frames)).to(device)
        self.mel_mean = self._dequant(self.mels_q[train]).mean(0)

    def _dequant(self, q: torch.Tensor) -> torch.Tensor:
        return self.mel_lo + q.float() * self.mel_step

    def _gather(self, flat: torch.Tensor, offsets: np.ndarray, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows offsets[i]:offsets[i+1] of `flat` for each i in ids, zero-padded -> (B, T, ...), valid (B, T)."""
        lens_np = offsets[ids + 1] - offsets[ids]
        starts = torch.from_numpy(offsets[ids]).to(self.device)
        lens = torch.from_numpy(lens_np).to(self.device)
        t = torch.arange(int(lens_np.max()), device=self.device)  # from the host copy: no device sync
        valid = t[None, :] < lens[:, None]
        rows = torch.where(valid, starts[:, None] + t[None, :], 0)
        return flat[rows], valid

    def batch(self, ids: np.ndarray) -> Batch:
        tokens, tv = self._gather(self.tokens, self.tok_off, ids)
        durations, _ = self._gather(self.durations, self.tok_off, ids)
        q, mv = self._gather(self.mels_q, self.mel_off, ids)
        mels = self._dequant(q) * mv[..., None]
        return Batch(tokens * tv, durations * tv, mels, mv.sum(1))


def length_batches(ids: np.ndarray, frames: np.ndarray, max_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, sort within pools of ~50 batches by length, cut so that B * longest <= max_frames."""
    ids = rng.permutation(ids)
    out = []
    pool = max(1, 50 * max_frames // int(frames[ids].mean()))
    for p in range(0, len(ids), pool):
        chunk = sorted(ids[p : p + pool], key=lambda i: frames[i])
        cur: list[int] = []
        for i in chunk:
            if cur and (len(cur) + 1) * max(frames[i], frames[cur[-1]]) > max_frames:
                out.append(np.array(cur))
                cur = []
            cur.append(i)
        if cur:
            out.append(np.array(cur))
    rng.shuffle(out)
    return out


# ---------------------------------------------------------------------------------------------
# Loss and evaluation
# ---------------------------------------------------------------------------------------------
def losses(model: FastSpeech, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(mel MSE over valid frames and bins, duration MSE on log(d + 1) over valid tokens)."""
    mel, log_dur = teacher_forward(model, b.tokens, b.durations)
    frames = b.mel_lens.sum() * mel.shape[-1]
    mel_loss = ((mel.float() - b.mels) ** 2).sum() / frames
    tv = (b.tokens != 0).float()
    dur_loss = (((log_dur.float() - torch.log1p(b.durations.float())) ** 2) * tv).sum() / tv.sum()
    return mel_loss, dur_loss


@torch.no_grad()
def evaluate(model: FastSpeech, corpus: Corpus, ids: np.ndarray, autocast: bool) -> dict:
    """Held-out metrics: teacher-forced mel error, and the durations the model predicts on its own.

    mel_l1 / mel_mse: per element over valid frames (natural-log mel units), with the reference
    durations. dur_mae: mean |predicted - reference| frames per token; dur_total_rel: mean over
    utterances of |predicted total - reference total| / reference total; dur_loss: the training loss.
    """
    model.eval()
    sums = {"l1": 0.0, "mse": 0.0, "el": 0, "mae": 0.0, "tok": 0, "rel": 0.0, "dloss": 0.0}
    for chunk in np.array_split(ids, max(1, len(ids) // 16)):
        b = corpus.batch(chunk)
        with torch.autocast(corpus.device.type, dtype=torch.bfloat16, enabled=autocast):
            mel, log_dur = teacher_forward(model, b.tokens, b.durations)
            predicted = model(b.tokens).durations  # (B, Ti) int, 0 at padding
        mel = mel.float()
        n = b.mel_lens.sum().item() * mel.shape[-1]
        sums["l1"] += (mel - b.mels).abs().sum().item()
        sums["mse"] += ((mel - b.mels) ** 2).sum().item()
        sums["el"] += n
        tv = b.tokens != 0
        sums["mae"] += ((predicted - b.durations).abs() * tv).sum().item()
        sums["tok"] += tv.sum().item()
        ref_total = b.durations.sum(1).float()
        sums["rel"] += ((predicted.sum(1).float() - ref_total).abs() / ref_total).sum().item()
        sums["dloss"] += (((log_dur.float() - torch.log1p(b.durations.float())) ** 2) * tv).sum().item()
    model.train()
    return {
        "utterances": len(ids),
        "mel_l1": sums["l1"] / sums["el"],
        "mel_mse": sums["mse"] / sums["el"],
        "dur_mae_frames": sums["mae"] / sums["tok"],
        "dur_total_rel": sums["rel"] / len(ids),
        "dur_loss": sums["dloss"] / sums["tok"],
    }


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------
def load_config(path: Path) -> FastSpeechConfig:
    """A conf/model YAML (its `defaults: [dle]` are FastSpeechConfig's own defaults)."""
    import yaml

    return FastSpeechConfig.from_dict(yaml.safe_load(Path(path).read_text()))


def noam(peak: float, warmup: int):
    return lambda step: peak * min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))


def train(args: argparse.Namespace) -> dict:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    file_log = logging.FileHandler(out / "train.log", mode="w")
    file_log.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(file_log)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    autocast = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    cfg = load_config(args.config)
    corpus = Corpus(Path(args.corpus), device)
    train_ids = np.nonzero(~corpus.heldout)[0]
    eval_ids = np.nonzero(corpus.heldout)[0]
    if args.limit:
        train_ids, eval_ids = train_ids[: args.limit], eval_ids[: max(2, args.limit // 4)]
    model = FastSpeech(cfg).to(device).train()
    with torch.no_grad():
        model.mel_linear.bias.copy_(corpus.mel_mean)
    add_dropout(model, args.dropout)
    n_params = sum(p.numel() for p in model.state_dict().values())
    log.info(
        "device %s | model %s: %d parameters (%.1f MiB fp32) | corpus %s: %d train, %d held-out utterances, %d train frames",
        device, args.config, n_params, n_params * 4 / 2**20, args.corpus, len(train_ids), len(eval_ids),
        corpus.n_frames[train_ids].sum(),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1.0, betas=(0.9, 0.98), eps=1e-9, fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, noam(args.peak_lr, args.warmup))

    t0 = time.time()
    step, epoch, best, skipped = 0, 0, math.inf, 0
    result: dict = {
        "best": {},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "config": str(args.config),
        "parameters": n_params,
        "args": {k: str(v) for k, v in vars(args).items()},
        "history": [],
    }
    done = False
    while not done:
        for ids in length_batches(train_ids, corpus.n_frames, args.max_frames, rng):
            b = corpus.batch(ids)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                mel_loss, dur_loss = losses(model, b)
            opt.zero_grad(set_to_none=True)
            (mel_loss + dur_loss).backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
            if torch.isfinite(grad_norm):
                opt.step()
            else:  # one bad batch must not poison the weights
                skipped += 1
            sched.step()
            step += 1
            minutes = (time.time() - t0) / 60
            done = step >= args.steps or minutes >= args.max_minutes
            if step % args.log_every == 0 or done or step == 1:
                log.info(
                    "step %d epoch %d | mel %.4f dur %.4f | grad %.2f lr %.2e | %d skipped | %.1f min",
                    step, epoch, mel_loss.item(), dur_loss.item(), grad_norm.item(), sched.get_last_lr()[0],
                    skipped, minutes,
                )
            if step % args.eval_every == 0 or done:
                metrics = evaluate(model, corpus, eval_ids, autocast)
                score = metrics["mel_mse"] + metrics["dur_loss"]
                log.info("held-out @%d: %s", step, json.dumps({k: round(v, 4) for k, v in metrics.items()}))
                if score < best or not result["best"]:  # (a NaN score never counts as best)
                    best = score if math.isfinite(score) else best
                    save_checkpoint(model, out / "demo_voice.pt", fmt="dle", step=step)
                    result["best"] = {"step": step, **metrics}
                # Written at every evaluation, so a run cut short still leaves its numbers.
                result["history"].append({"step": step, "minutes": round(minutes, 2), **metrics})
                result.update(final_step=step, minutes=round(minutes, 2), skipped_steps=skipped,
                              checkpoint_bytes=(out / "demo_voice.pt").stat().st_size)
                (out / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
            if done:
                break
        epoch += 1
    log.info("best held-out (step %d): %s; checkpoint %s (%d bytes)", result["best"]["step"],
             json.dumps({k: round(v, 4) for k, v in result["best"].items()}), out / "demo_voice.pt",
             result["checkpoint_bytes"])
    return result


def evaluate_checkpoint(args: argparse.Namespace) -> dict:
    """Held-out metrics of a trained checkpoint on the CPU, and optionally the README's plot."""
    device = torch.device("cpu")
    model = FastSpeech(load_config(args.config))
    load_checkpoint(model, args.evaluate)
    model.eval()
    corpus = Corpus(Path(args.corpus), device)
    eval_ids = np.nonzero(corpus.heldout)[0]
    if args.limit:
        eval_ids = eval_ids[: args.limit]
    metrics = evaluate(model, corpus, eval_ids, autocast=False)
    log.info("held-out: %s", json.dumps({k: round(v, 4) for k, v in metrics.items()}))
    if args.plot:
        plot(model, corpus, int(eval_ids[args.plot_index]), Path(args.plot))
    return metrics


def plot(model: FastSpeech, corpus: Corpus, i: int, path: Path) -> None:
    """eSpeak's mel over the demo voice's mel (its own durations) for one held-out utterance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = corpus.batch(np.array([i]))
    with torch.no_grad():
        out = model(b.tokens)
    synth = out.mel[0, : int(out.mel_lens[0])].numpy()
    ref = b.mels[0, : int(b.mel_lens[0])].numpy()
    ref_d, pred_d = b.durations[0].numpy(), out.durations[0].numpy()
    fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), constrained_layout=True)
    width = max(len(ref), len(synth))
    vmin, vmax = -11.5, max(ref.max(), synth.max())
    for ax, mel, durs, title in (
        (axes[0], ref, ref_d, f"eSpeak NG (reference), {len(ref)} frames"),
        (axes[1], synth, pred_d, f"demo voice (its own durations), {len(synth)} frames"),
    ):
        ax.imshow(mel.T, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma", interpolation="none")
        for edge in np.cumsum(durs)[:-1]:
            ax.axvline(edge - 0.5, color="white", lw=0.3, alpha=0.35)
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("mel bin")
    axes[1].set_xlabel("frame (11.6 ms)")
    text = corpus.texts[i]
    fig.suptitle(f"held-out: {text if len(text) < 100 else text[:97] + '...'}", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log.info("wrote %s", path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=str(ROOT / "data" / "demo_corpus.npz"))
    p.add_argument("--config", default=str(ROOT / "conf" / "model" / "demo.yaml"))
    p.add_argument("--out", default="results/demo", help="demo_voice.pt, eval.json, train.log go here")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--max-minutes", type=float, default=8.0, help="training time budget")
    p.add_argument("--steps", type=int, default=1_000_000, help="stop after this many steps")
    p.add_argument("--max-frames", type=int, default=16000, help="batch size: padded frames per batch")
    p.add_argument("--peak-lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--limit", type=int, default=0, help="use only this many training utterances (smoke tests)")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evaluate", default=None, help="evaluate this checkpoint (CPU) instead of training")
    p.add_argument("--plot", default=None, help="with --evaluate: write the mel comparison PNG here")
    p.add_argument("--plot-index", type=int, default=0, help="which held-out utterance to plot")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stdout)
    register_op_gradients()
    if args.evaluate:
        evaluate_checkpoint(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
