"""Train-step throughput of a plain PyTorch AstroM3 CLIP model, for comparison.

The performance target is "2x the published PyTorch implementation". To
measure that on the same machine as our JAX step (benchmarks/train_step.py),
this script builds the paper's CLIP model (15,869,827 parameters: Informer
encoder with ProbSparse attention, GalSpecNet, metadata MLP, projections,
three temperatures) in straightforward PyTorch, following the authors'
published implementation (Rizhko & Bloom 2024, arXiv:2411.08842), and times
full train steps (zero_grad, forward, CLIP loss, backward, clip_grad_norm_
45, Adam with coupled L2 weight decay) on random inputs of the real shapes,
summarised like benchmarks/train_step.py (median step, range, mean:
benchmarks/step_timing.py).

With --forward it times the inference forward pass instead (eval mode,
torch.no_grad, the three normalised embeddings); --json prints one JSON
object per batch size with the raw step times, which benchmarks/inference.py
reads to compare against our compiled `embed`.

PyTorch is not a project dependency; install it in a separate venv (on the
project machines `pip install torch==2.13.0` takes a CPU wheel from local
disk, see the env docs on python machines):

  python3 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
  /tmp/torchvenv/bin/python benchmarks/torch_train_step.py --batch_sizes 64 512
  /tmp/torchvenv/bin/python benchmarks/torch_train_step.py --batch_sizes 8 --steps 3
  /tmp/torchvenv/bin/python benchmarks/torch_train_step.py --malloc system
  /tmp/torchvenv/bin/python benchmarks/torch_train_step.py --batch_sizes 64 --profile 12
  /tmp/torchvenv/bin/python benchmarks/torch_train_step.py --forward --steps 10

Both benchmarks restart themselves under tcmalloc when it is installed
(astrom3_jax/cli/host_memory.py); it speeds up PyTorch's step too.
"""

import argparse
import importlib.util
import json
import math
import os
import time

import step_timing
import torch
import torch.nn.functional as F
from torch import nn

SEQ_LEN, PHOTO_CHANNELS = 200, 9
SPEC_CHANNELS, SPEC_LEN = 3, 2575
META_DIM = 34
D_MODEL, N_HEADS, D_FF, N_LAYERS = 128, 4, 512, 8
EMBED_DIM = 512
EXPECTED_PARAMS = 15_869_827

# The paper's pre-training hyperparameters (Rizhko & Bloom 2024).
LR, BETAS, EPS, WEIGHT_DECAY, CLIP_NORM = 0.00392, (0.926, 0.999), 1e-8, 0.00467, 45.0
DROPOUT_PHOTO, DROPOUT_SPEC, DROPOUT_META = 0.245, 0.339, 0.160


def prob_sparse_attention(q, k, v, factor: int = 1) -> torch.Tensor:
    """Informer ProbSparse self-attention; q, k, v and result are (B, H, L, E).

    The top-u queries by sparsity measure get softmax attention over all keys;
    every other query gets the mean of V. With u >= L it is full attention.
    """
    B, H, L_q, E = q.shape
    L_k = k.shape[2]
    n_sample = min(factor * math.ceil(math.log(L_k)), L_k)
    n_top = min(factor * math.ceil(math.log(L_q)), L_q)

    # Sparsity from a few random keys per query, shared by batch and heads.
    sample_idx = torch.randint(L_k, (L_q, n_sample), device=q.device)
    k_sample = k[:, :, sample_idx]  # (B, H, L_q, n_sample, E)
    sampled = torch.einsum("bhle,bhlse->bhls", q, k_sample)
    sparsity = sampled.amax(-1) - sampled.sum(-1) / L_k
    top = sparsity.topk(n_top, dim=-1, sorted=False).indices  # (B, H, u)

    top_e = top.unsqueeze(-1).expand(-1, -1, -1, E)
    q_top = q.gather(2, top_e)
    scores = q_top @ k.transpose(-2, -1) / math.sqrt(E)
    out = scores.softmax(-1) @ v  # (B, H, u, E)

    lazy = v.mean(2, keepdim=True).expand(B, H, L_q, E).contiguous()
    return lazy.scatter(2, top_e, out)


class AttentionLayer(nn.Module):
    def __init__(self, factor: int = 1):
        super().__init__()
        self.factor = factor
        self.query_projection = nn.Linear(D_MODEL, D_MODEL)
        self.key_projection = nn.Linear(D_MODEL, D_MODEL)
        self.value_projection = nn.Linear(D_MODEL, D_MODEL)
        self.out_projection = nn.Linear(D_MODEL, D_MODEL)

    def forward(self, x):
        B, L, _ = x.shape

        def heads(t):
            return t.view(B, L, N_HEADS, -1).transpose(1, 2)

        q = heads(self.query_projection(x))
        k = heads(self.key_projection(x))
        v = heads(self.value_projection(x))
        context = prob_sparse_attention(q, k, v, self.factor)
        # Reference quirk: (B, H, L, E) goes row-major straight to (B, L, H*E).
        return self.out_projection(context.reshape(B, L, -1))


class EncoderLayer(nn.Module):
    def __init__(self, dropout: float):
        super().__init__()
        self.attention = AttentionLayer()
        self.conv1 = nn.Conv1d(D_MODEL, D_FF, kernel_size=1)
        self.conv2 = nn.Conv1d(D_FF, D_MODEL, kernel_size=1)
        self.norm1 = nn.LayerNorm(D_MODEL)
        self.norm2 = nn.LayerNorm(D_MODEL)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = self.norm1(x + self.dropout(self.attention(x)))
        y = self.dropout(F.gelu(self.conv1(x.transpose(1, 2))))
        y = self.dropout(self.conv2(y).transpose(1, 2))
        return self.norm2(x + y)


class Encoder(nn.Module):
    def __init__(self, dropout: float):
        super().__init__()
        self.attn_layers = nn.ModuleList(EncoderLayer(dropout) for _ in range(N_LAYERS))
        self.norm = nn.LayerNorm(D_MODEL)

    def forward(self, x):
        for layer in self.attn_layers:
            x = layer(x)
        return self.norm(x)


class TokenEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.tokenConv = nn.Conv1d(
            PHOTO_CHANNELS,
            D_MODEL,
            kernel_size=3,
            padding=1,
            padding_mode="circular",
            bias=False,
        )

    def forward(self, x):  # (B, L, C) -> (B, L, D)
        return self.tokenConv(x.transpose(1, 2)).transpose(1, 2)


class PositionalEmbedding(nn.Module):
    def __init__(self, max_len: int = 5000):
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, D_MODEL, 2) * (-math.log(10000.0) / D_MODEL))
        pe = torch.zeros(max_len, D_MODEL)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)
        self.register_buffer("pe", pe[None])

    def forward(self, x):
        return self.pe[:, : x.shape[1]]


class DataEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.value_embedding = TokenEmbedding()
        self.position_embedding = PositionalEmbedding()
        self.dropout = nn.Dropout(0.1)

    def forward(self, x):
        return self.dropout(self.value_embedding(x) + self.position_embedding(x))


class PhotometryEncoder(nn.Module):
    def __init__(self, dropout: float):
        super().__init__()
        self.enc_embedding = DataEmbedding()
        self.encoder = Encoder(dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask):  # (B, L, 9), (B, L) -> (B, L * D)
        x = self.dropout(self.encoder(self.enc_embedding(x)))
        return (x * mask.unsqueeze(-1)).flatten(1)


class GalSpecNet(nn.Module):
    def __init__(self, dropout: float):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv1d(SPEC_CHANNELS, 64, 3),
            nn.ReLU(),
            nn.MaxPool1d(4),
            nn.Conv1d(64, 64, 3),
            nn.ReLU(),
            nn.MaxPool1d(4),
            nn.Conv1d(64, 32, 3),
            nn.ReLU(),
            nn.MaxPool1d(4),
            nn.Conv1d(32, 32, 3),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):  # (B, 3, 2575) -> (B, 32 * 37), channel-major
        return self.dropout(self.layers(x).flatten(1))


class MetadataEncoder(nn.Module):
    def __init__(self, dropout: float):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(META_DIM, EMBED_DIM),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(EMBED_DIM, EMBED_DIM),
            nn.ReLU(),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.model(x)


class AstroM3CLIP(nn.Module):
    def __init__(self):
        super().__init__()
        self.photometry_encoder = PhotometryEncoder(DROPOUT_PHOTO)
        self.spectra_encoder = GalSpecNet(DROPOUT_SPEC)
        self.metadata_encoder = MetadataEncoder(DROPOUT_META)
        self.photometry_proj = nn.Linear(SEQ_LEN * D_MODEL, EMBED_DIM)
        self.spectra_proj = nn.Linear(32 * 37, EMBED_DIM)
        self.metadata_proj = nn.Linear(EMBED_DIM, EMBED_DIM)
        init = torch.tensor(math.log(100.0))
        self.logit_scale_ps = nn.Parameter(init.clone())
        self.logit_scale_sm = nn.Parameter(init.clone())
        self.logit_scale_mp = nn.Parameter(init.clone())

    def forward(self, photometry, photometry_mask, spectra, metadata):
        p = self.photometry_proj(self.photometry_encoder(photometry, photometry_mask))
        s = self.spectra_proj(self.spectra_encoder(spectra))
        m = self.metadata_proj(self.metadata_encoder(metadata))
        return F.normalize(p, dim=-1), F.normalize(s, dim=-1), F.normalize(m, dim=-1)

    def loss(self, p, s, m) -> torch.Tensor:
        labels = torch.arange(p.shape[0], device=p.device)
        total = p.new_zeros(())
        for a, b, log_scale in (
            (p, s, self.logit_scale_ps),
            (s, m, self.logit_scale_sm),
            (m, p, self.logit_scale_mp),
        ):
            logits = log_scale.exp().clamp(1.0, 100.0) * a @ b.T
            total = total + F.cross_entropy(logits, labels)
            total = total + F.cross_entropy(logits.T, labels)
        return total


def random_batch(batch_size: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(50, SEQ_LEN + 1, (batch_size, 1), generator=g)
    return {
        "photometry": torch.randn(batch_size, SEQ_LEN, PHOTO_CHANNELS, generator=g),
        "photometry_mask": (torch.arange(SEQ_LEN)[None] < lengths).float(),
        "spectra": torch.randn(batch_size, SPEC_CHANNELS, SPEC_LEN, generator=g),
        "metadata": torch.randn(batch_size, META_DIM, generator=g),
    }


def bench(batch_size: int, steps: int, profile_rows: int = 0) -> None:
    torch.manual_seed(0)
    model = AstroM3CLIP()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == EXPECTED_PARAMS, n_params
    model.train()
    opt = torch.optim.Adam(
        model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY
    )
    batch = random_batch(batch_size)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = model.loss(*model(**batch))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
        opt.step()
        return loss.item()

    losses = [step() for _ in range(2)]  # warm-up
    times, t_start = [], time.perf_counter()
    while (steps and len(times) < steps) or (
        not steps and time.perf_counter() - t_start < 20.0
    ):
        t0 = time.perf_counter()
        losses.append(step())  # .item() waits for the step
        times.append(time.perf_counter() - t0)
    stats = step_timing.summarize(times, batch_size)
    print(f"batch {batch_size}: {step_timing.describe(stats)}")
    if steps:  # short check runs: show the losses on the fixed batch
        print(f"  params {n_params:,}, losses", " ".join(f"{x:.4f}" for x in losses))
    if profile_rows:  # where PyTorch's step spends its time
        cpu = [torch.profiler.ProfilerActivity.CPU]
        with torch.profiler.profile(activities=cpu) as p:
            for _ in range(3):
                step()
        table = p.key_averages().table(
            sort_by="self_cpu_time_total", row_limit=profile_rows
        )
        print(f"  3 profiled steps, ops by own CPU time:\n{table}")


def bench_forward(batch_size: int, steps: int, as_json: bool) -> None:
    """Inference: eval mode (no dropout) under torch.no_grad, embeddings out."""
    torch.manual_seed(0)
    model = AstroM3CLIP()
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS
    model.eval()
    batch = random_batch(batch_size)

    def forward() -> None:
        with torch.no_grad():
            model(**batch)  # eager CPU ops: done when they return

    for _ in range(2):  # warm-up
        forward()
    times, t_start = [], time.perf_counter()
    while (steps and len(times) < steps) or (
        not steps and time.perf_counter() - t_start < 20.0
    ):
        t0 = time.perf_counter()
        forward()
        times.append(time.perf_counter() - t0)
    stats = step_timing.summarize(times, batch_size)
    if as_json:
        print(json.dumps({"batch": batch_size, "step_s": times, **stats}), flush=True)
    else:
        print(f"batch {batch_size} forward: {step_timing.describe(stats)}")


def load_host_memory():
    """astrom3_jax/cli/host_memory.py, loaded by path (it needs only the stdlib).

    This script runs in a venv without the project installed, and restarts
    under tcmalloc like our JAX benchmark, for a fair comparison.
    """
    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "astrom3_jax",
        "cli",
        "host_memory.py",
    )
    spec = importlib.util.spec_from_file_location("host_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--steps", type=int, default=0, help="0: about 20 s worth")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--profile", type=int, default=0, help="then print the top N ops of 3 steps"
    )
    parser.add_argument(
        "--forward",
        action="store_true",
        help="time the eval-mode forward under torch.no_grad instead",
    )
    parser.add_argument(
        "--json", action="store_true", help="--forward: one JSON line per batch size"
    )
    parser.add_argument(
        "--malloc",
        choices=["tcmalloc", "system"],
        default="tcmalloc",
        help="tcmalloc: restart under it if installed, as benchmarks/train_step.py",
    )
    args = parser.parse_args()
    host_memory = load_host_memory()
    # replaces this process when tcmalloc is installed
    malloc = host_memory.reexec_with_tcmalloc(enabled=args.malloc == "tcmalloc")
    if args.threads:
        torch.set_num_threads(args.threads)
    header = f"torch {torch.__version__}, threads {torch.get_num_threads()}; {malloc}"
    if args.json:
        header = json.dumps({"header": header})
    print(header, flush=True)
    for b in args.batch_sizes:
        if args.forward:
            bench_forward(b, args.steps, args.json)
        else:
            bench(b, args.steps, args.profile)


if __name__ == "__main__":
    main()
