#!/usr/bin/python3
"""The same Transformer training step timed in Cerebra and in PyTorch eager, in one run.

For a config plus `--key value` overrides it runs `cerebra bench step` (which builds the model as `cerebra train`
does and writes its shape, its initial weights and its first training batch), builds the same model in PyTorch
eager from those hyperparameters (plain nn.Linear, nn.LayerNorm, nn.Embedding and softmax(q k^T) v), loads the
same initial weights and batch, and times the same step: zero_grad, forward, the task's loss, backward, the
finite-gradient check, clip_grad_norm_, AdamW (same lr, weight decay, betas, eps), with the same thread count,
warm-up and timed steps. Measurements are interleaved (cerebra, pytorch, cerebra, pytorch, ...), each in a fresh
process, so that load from other processes falls on both sides alike; the per-round ratios are what count.

Both sides run with the same OpenMP wait policy: `cerebra` sets OMP_WAIT_POLICY=PASSIVE for itself unless the
environment chooses one, and the PyTorch process gets whatever cerebra ran with, so that the comparison is of the
step and not of how idle OpenMP threads wait (on a loaded machine libgomp's default spinning makes 2-thread steps
several times slower). --pytorch-omp-wait default leaves PyTorch's environment as it is (PyTorch as it comes).

The models are checked to be the same: before anything is timed, the parameter names and shapes must match one to
one (so the counts are equal); then the eval-mode loss and gradient norm of the shared initial weights on the shared
batch must agree with cerebra's, and the forward FLOPs counted on both sides (matmul-class ops) must be equal. A
mismatch is reported and the script exits with status 1.

Needs Debian's python3-torch (1.13: the same libtorch_cpu and OpenBLAS as the project's libtorch-dev), run by the
system interpreter:
    apt-get install python3-torch
    /usr/bin/python3 scripts/compare_pytorch.py --config configs/cps1988.yaml --threads 1,2
    /usr/bin/python3 scripts/compare_pytorch.py --config configs/ladder/mqar_n1024.yaml --threads 1,2
Options of this script: --threads LIST (default 1), --warmup N (5), --steps N (30), --rounds N (2: each side runs
N times per thread count), --pytorch-omp-wait same|default, --out FILE (JSON; default
runs/compare-pytorch/<task>-<model>.json), --cerebra PATH.
Every other `--key value` is a config override passed to `cerebra bench step`.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    sys.exit("compare_pytorch.py: PyTorch is not importable by " + sys.executable + ".\n"
             "Install Debian's build (the same libtorch and OpenBLAS as the project): apt-get install python3-torch,\n"
             "and run this script with /usr/bin/python3.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IGNORE = -100  # cerebra::kIgnore: target of a position that is not predicted


# ---- the model, as src/models builds it


def sinusoidal_positions(n, d):
    """src/train/run.cpp sinusoidal_positions: (n, d), sin on even columns, cos on odd."""
    pos = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    i = torch.arange(0, d, 2, dtype=torch.float32)
    angle = pos * torch.exp(i * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)[:, : d // 2]
    return pe


class Attention(nn.Module):
    """src/models/attention_mixer.cpp, naive core: materialised softmax(q kᵀ / sqrt(dh)) v."""

    def __init__(self, d, heads, causal):
        super().__init__()
        assert d % heads == 0, f"d_model {d} must be divisible by n_heads {heads}"
        self.h, self.dh, self.causal = heads, d // heads, causal
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x, mask):  # x: (B, n, d), mask: (B, n) bool or None -> (B, n, d)
        B, n, _ = x.shape
        qkv = self.qkv(x).view(B, n, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)  # (3, B, h, n, dh)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q * (1.0 / math.sqrt(self.dh)), k.transpose(-2, -1))  # (B, h, n, n)
        allowed = None
        if mask is not None:
            allowed = mask.view(B, 1, 1, n)
        if self.causal:
            tri = torch.ones(n, n, dtype=torch.bool).tril().view(1, 1, n, n)
            allowed = tri if allowed is None else allowed.logical_and(tri)
        if allowed is not None:
            scores = scores.masked_fill(allowed.logical_not(), float("-inf"))
        probs = torch.softmax(scores, -1)
        if allowed is not None:
            probs = probs.masked_fill(allowed.logical_not(), 0.0)
        y = torch.matmul(probs, v).transpose(1, 2).reshape(B, n, self.h * self.dh)
        return self.out(y)


class Backbone(nn.Module):
    """src/models/backbone.cpp: n_layers x [x + drop(mixer(norm1(x))); x + drop(ffn(norm2(x)))], final norm.
    ffn = ffn_out(gelu(ffn_in(.))), exact (erf) GELU; one dropout module for both residual branches."""

    def __init__(self, d, layers, heads, ffn_mult, dropout, causal):
        super().__init__()
        self.layers, self.ffn_mult = layers, ffn_mult
        for l in range(layers):  # registration order and names as the C++ module's
            setattr(self, f"mixer{l}", Attention(d, heads, causal))
            setattr(self, f"norm1_{l}", nn.LayerNorm(d))
            if ffn_mult > 0:
                setattr(self, f"norm2_{l}", nn.LayerNorm(d))
                setattr(self, f"ffn_in{l}", nn.Linear(d, ffn_mult * d))
                setattr(self, f"ffn_out{l}", nn.Linear(ffn_mult * d, d))
        self.final_norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask):
        for l in range(self.layers):
            h = getattr(self, f"norm1_{l}")(x)
            x = x + self.drop(getattr(self, f"mixer{l}")(h, mask))
            if self.ffn_mult > 0:
                f = getattr(self, f"ffn_out{l}")(F.gelu(getattr(self, f"ffn_in{l}")(getattr(self, f"norm2_{l}")(x))))
                x = x + self.drop(f)
        return self.final_norm(x)


class FeatureTokenModel(nn.Module):
    """src/models/tabular_models.cpp: numeric feature j -> x_j·w_j + b_j, categorical -> embedding + bias, a CLS
    token appended last; the head reads the CLS token."""

    def __init__(self, schema, d, backbone):
        super().__init__()
        self.n_num, self.d = schema["n_numeric"], d
        cards = schema["cardinalities"]
        if self.n_num > 0:
            self.num_weight = nn.Parameter(torch.randn(self.n_num, d) * 0.1)
            self.num_bias = nn.Parameter(torch.zeros(self.n_num, d))
        self.n_cat = len(cards)
        if self.n_cat > 0:
            offsets = [sum(cards[:j]) for j in range(self.n_cat)]
            self.register_buffer("cat_offsets", torch.tensor(offsets, dtype=torch.int64))
            self.embed = nn.Embedding(sum(cards), d)
            self.cat_bias = nn.Parameter(torch.zeros(self.n_cat, d))
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.backbone = backbone
        self.head = nn.Linear(d, schema["n_outputs"])

    def forward(self, b):
        B = b["y"].shape[0]
        toks = []
        if self.n_num > 0:
            toks.append(b["num"].unsqueeze(-1) * self.num_weight + self.num_bias)
        if self.n_cat > 0:
            toks.append(self.embed(b["cat"] + self.cat_offsets) + self.cat_bias)
        toks.append(self.cls.expand(B, 1, self.d))
        h = self.backbone(torch.cat(toks, 1), None)
        return self.head(h.select(1, h.size(1) - 1))


class SeqModel(nn.Module):
    """src/train/run.cpp SeqModel: token embedding + sinusoidal positions + backbone + linear head."""

    def __init__(self, info, head, d, backbone):
        super().__init__()
        self.head_kind = head
        self.embed = nn.Embedding(info["vocab"], d)
        self.backbone = backbone
        self.head = nn.Linear(d, info["n_classes"])
        self.pe = sinusoidal_positions(info["n"], d)  # not a parameter, as in C++

    def forward(self, b):
        tokens = b["tokens"]
        n = tokens.shape[1]
        x = self.embed(tokens) + self.pe[:n]
        m = b.get("mask")
        mask = m if m is not None and not bool(m.all()) else None  # an all-real batch goes without a mask
        h = self.backbone(x, mask)
        if self.head_kind == "sequence_classification":
            if mask is not None:
                w = mask.unsqueeze(-1).to(h.dtype)
                pooled = (h * w).sum(1) / w.sum(1).clamp_min(1.0)
            else:
                pooled = h.mean(1)
            return self.head(pooled)
        return self.head(h)


def task_loss(head, pred, b):
    """cerebra::Task::loss (src/data/task.cpp)."""
    if head == "regression":
        return F.mse_loss(pred.reshape(-1), b["y"])
    if head == "sequence_classification":
        return F.cross_entropy(pred, b["y"])
    return F.cross_entropy(pred.reshape(-1, pred.size(-1)), b["y"].reshape(-1), ignore_index=IGNORE)


def build_model(spec):
    """The PyTorch model of a `cerebra bench step --json` result; refuses what it does not reproduce."""
    c = spec["config"]
    if spec["model"] not in ("transformer", "attention"):
        sys.exit(f"compare_pytorch.py: only the Transformer (attention mixer) is reproduced, not '{spec['model']}'")
    unsupported = {"layers": c["layers"] != "", "short_conv": c["short_conv"] != 0,
                   "ffn_layers": c["ffn_layers"] not in ("", "dense"), "qat": c["qat"],
                   "compute objective": spec["compute_objective"]}
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        sys.exit("compare_pytorch.py: the PyTorch model does not reproduce: " + ", ".join(bad))
    info = spec["task_info"]
    d = c["d_model"]
    backbone = Backbone(d, c["n_layers"], c["n_heads"], c["ffn_mult"], c["dropout"], info["causal"])
    if spec["head"] == "regression":
        return FeatureTokenModel(info["schema"], d, backbone)
    return SeqModel(info, spec["head"], d, backbone)


def load_shared(model, path):
    """The initial weights and the batch cerebra exported; names and shapes must match one to one."""
    saved = torch.load(path)
    state = {k.split(":", 1)[1]: v for k, v in saved.items() if k.startswith(("param:", "buffer:"))}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or extra or shapes:
        sys.exit(f"compare_pytorch.py: the models differ: only in PyTorch {missing}, only in cerebra {extra}, "
                 f"different shapes {[(k, tuple(own[k].shape), tuple(state[k].shape)) for k in shapes]}")
    model.load_state_dict(state, strict=True)
    return {k.split(":", 1)[1]: v for k, v in saved.items() if k.startswith("batch:")}


# ---- FLOPs: matmul-class aten ops, 2 per multiply-add (cerebra's FlopCounter convention)

try:
    from torch.utils._python_dispatch import TorchDispatchMode
except ImportError:  # pragma: no cover
    TorchDispatchMode = None

if TorchDispatchMode is not None:
    class FlopCount(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.total = 0.0
            self.by_op = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = str(func.overloadpacket)
            f = 0.0
            if name == "aten.mm":
                f = 2.0 * args[0].shape[0] * args[0].shape[1] * args[1].shape[1]
            elif name == "aten.addmm":
                f = 2.0 * args[1].shape[0] * args[1].shape[1] * args[2].shape[1]
            elif name == "aten.bmm":
                f = 2.0 * args[0].shape[0] * args[0].shape[1] * args[0].shape[2] * args[1].shape[2]
            elif name == "aten.baddbmm":
                f = 2.0 * args[1].shape[0] * args[1].shape[1] * args[1].shape[2] * args[2].shape[2]
            if f:
                self.total += f
                self.by_op[name] = self.by_op.get(name, 0.0) + f
            return out


# ---- the PyTorch side (a fresh process per measurement: --worker)


def gradients_finite(params):
    sums = [p.grad.sum().double() for p in params if p.grad is not None]
    return not sums or math.isfinite(torch.stack(sums).sum().item())


def omp_wait_policy(env):
    """The OpenMP wait policy an environment sets, named as cerebra's openmp_wait_policy() names it."""
    if env.get("OMP_WAIT_POLICY"):
        return env["OMP_WAIT_POLICY"]
    if env.get("GOMP_SPINCOUNT"):
        return "GOMP_SPINCOUNT=" + env["GOMP_SPINCOUNT"]
    return "default"


def worker_env(cerebra_policy, mode):
    """The PyTorch process's environment: with mode "same", cerebra's OpenMP wait policy (libgomp reads it when it
    is loaded, so it must be in the environment of the new process)."""
    env = dict(os.environ)
    if mode == "default":
        return env
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    if cerebra_policy.startswith("GOMP_SPINCOUNT="):
        env["GOMP_SPINCOUNT"] = cerebra_policy.split("=", 1)[1]
    elif cerebra_policy != "default":
        env["OMP_WAIT_POLICY"] = cerebra_policy
    return env


def run_worker(spec_path, export_path, threads, warmup, steps, out_path):
    torch.set_num_threads(threads)
    spec = json.load(open(spec_path))
    torch.manual_seed(spec["config"]["seed"])
    model = build_model(spec)
    b = load_shared(model, export_path)
    head = spec["head"]
    params = sum(p.numel() for p in model.parameters())

    # The check cerebra made: eval mode (no dropout), loss and total gradient norm of the initial weights.
    model.eval()
    loss = task_loss(head, model(b), b)
    loss.backward()
    grad_norm = math.sqrt(sum(float(p.grad.norm()) ** 2 for p in model.parameters() if p.grad is not None))
    check = {"eval_loss": loss.item(), "eval_grad_norm": grad_norm}
    for p in model.parameters():
        p.grad = None
    model.train()

    o = spec["optimizer"]
    opt = torch.optim.AdamW(model.parameters(), lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                            weight_decay=o["weight_decay"])
    clip = o["grad_clip"]

    def step(counter=None):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = o["lr"]
        opt.zero_grad(set_to_none=False)  # as LibTorch 1.13's zero_grad: zeroed, not freed
        t1 = time.perf_counter()
        if counter is not None:
            with FlopCount() as fc:
                loss = task_loss(head, model(b), b)
            counter["forward"], counter["forward_by_op"] = fc.total, fc.by_op
        else:
            loss = task_loss(head, model(b), b)
        value = loss.item()
        if not math.isfinite(value):
            sys.exit(f"compare_pytorch.py: the PyTorch loss is {value}")
        t2 = time.perf_counter()
        if counter is not None:
            with FlopCount() as fc:
                loss.backward()
            counter["backward"] = fc.total
        else:
            loss.backward()
        t3 = time.perf_counter()
        ps = list(model.parameters())
        if not gradients_finite(ps):
            sys.exit("compare_pytorch.py: a PyTorch gradient is not finite")
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(ps, clip)
        opt.step()
        t4 = time.perf_counter()
        return t2 - t1, t3 - t2, (t1 - t0) + (t4 - t3)

    for _ in range(warmup):
        step()
    fwd, bwd, optim = [], [], []
    for _ in range(steps):
        f, bk, op = step()
        fwd.append(f)
        bwd.append(bk)
        optim.append(op)
    counted = {}
    if TorchDispatchMode is not None:
        step(counted)
    total = [a + b_ + c for a, b_, c in zip(fwd, bwd, optim)]
    mean = statistics.mean(total)

    def phase(v):
        return {"mean_ms": 1e3 * statistics.mean(v), "median_ms": 1e3 * statistics.median(v),
                "share": statistics.mean(v) / mean}

    result = {"params": params, "threads": torch.get_num_threads(), "torch_version": torch.__version__,
              "openmp_wait_policy": omp_wait_policy(os.environ),
              "step_ms": [1e3 * t for t in total], "mean_ms": 1e3 * mean,
              "median_ms": 1e3 * statistics.median(total),
              "phases": {"forward": phase(fwd), "backward": phase(bwd), "optimizer": phase(optim)},
              "check": check, "blas": loaded_blas(),
              "flops": {"measured_forward_per_batch": counted.get("forward"),
                        "measured_backward_per_batch": counted.get("backward"),
                        "forward_by_op": counted.get("forward_by_op")}}
    json.dump(result, open(out_path, "w"), indent=2)


def loaded_blas():
    """The BLAS mapped into this process (after the steps' GEMMs), as cerebra's loaded_blas_library()."""
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if "blas" in line.split()[-1]}
    real = sorted(l for l in libs if "openblas" in os.path.basename(l)) or sorted(libs)
    return real[0] if real else ""


# ---- the comparison


def run(cmd, what, env=None):
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"compare_pytorch.py: {what} failed (exit {r.returncode}):\n  {' '.join(cmd)}\n{r.stderr}{r.stdout}")
    return r


def percentile(v, q):
    v = sorted(v)
    return v[int(q * (len(v) - 1))]


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--config", required=False, action="append", default=[], help="YAML config file(s)")
    ap.add_argument("--threads", default="1", help="comma-separated thread counts (default 1)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2, help="measurements per side and thread count, interleaved")
    ap.add_argument("--pytorch-omp-wait", choices=("same", "default"), default="same",
                    help="same: PyTorch runs with cerebra's OpenMP wait policy; default: PyTorch's environment as is")
    ap.add_argument("--out", default="", help="JSON results (default runs/compare-pytorch/<task>-<model>.json)")
    ap.add_argument("--cerebra", default=os.path.join(REPO, "build", "cerebra"))
    ap.add_argument("--worker", nargs=5, metavar=("SPEC", "EXPORT", "THREADS", "WARMUP_STEPS", "OUT"),
                    help=argparse.SUPPRESS)
    args, overrides = ap.parse_known_args()
    if args.worker:
        spec, export, threads, ws, out = args.worker
        warmup, steps = (int(x) for x in ws.split(","))
        return run_worker(spec, export, int(threads), warmup, steps, out)

    try:
        thread_list = [int(t) for t in args.threads.split(",") if t]
    except ValueError:
        sys.exit(f"compare_pytorch.py: --threads expects comma-separated integers, got '{args.threads}'")
    if not thread_list or min(thread_list) < 1:
        sys.exit("compare_pytorch.py: --threads needs at least one count >= 1 (both sides get the same count)")
    if args.warmup < 0 or args.steps < 1 or args.rounds < 1:
        sys.exit("compare_pytorch.py: --warmup must be >= 0, --steps and --rounds >= 1")
    if not args.config:
        sys.exit("compare_pytorch.py: give --config FILE (e.g. configs/cps1988.yaml)")
    if not os.access(args.cerebra, os.X_OK):
        sys.exit(f"compare_pytorch.py: {args.cerebra} not found; build it first (cmake --build build --target cerebra)")

    config_args = [a for f in args.config for a in ("--config", f)] + overrides
    tmp = tempfile.mkdtemp(prefix="compare_pytorch_")
    export = os.path.join(tmp, "shared.pt")
    rounds = {}
    first = None
    for t in thread_list:
        rounds[t] = []
        for r in range(args.rounds):
            cj = os.path.join(tmp, f"cerebra_t{t}_r{r}.json")
            cmd = [args.cerebra, "bench", "step", *config_args, "--threads", str(t), "--warmup", str(args.warmup),
                   "--steps", str(args.steps), "--json", cj]
            if first is None:
                cmd += ["--export", export]
            load_c = os.getloadavg()[0]
            run(cmd, "cerebra bench step")
            c = json.load(open(cj))
            if first is None:
                first = c
                print(f"{c['model']} on {c['task']} ({c['head']}): batch {c['batch']['size']}, "
                      f"{c['batch']['tokens'] / c['batch']['size']:.4g} tokens per example, "
                      f"d_model {c['config']['d_model']}, {c['config']['n_layers']} layers, "
                      f"{c['config']['n_heads']} heads, ffn_mult {c['config']['ffn_mult']}, "
                      f"dropout {c['config']['dropout']}; {args.warmup} warm-up + {args.steps} timed steps", flush=True)
            pj = os.path.join(tmp, f"pytorch_t{t}_r{r}.json")
            load_p = os.getloadavg()[0]
            run([sys.executable, os.path.abspath(__file__), "--worker", cj, export, str(t),
                 f"{args.warmup},{args.steps}", pj], "the PyTorch side",
                env=worker_env(c.get("openmp_wait_policy", "default"), args.pytorch_omp_wait))
            p = json.load(open(pj))
            speedup = p["median_ms"] / c["median_ms"]
            rounds[t].append({"cerebra": c, "pytorch": p, "speedup": speedup, "load_before": [load_c, load_p]})
            print(f"  threads {t} round {r + 1}: cerebra {c['median_ms']:.3f} ms/step, pytorch {p['median_ms']:.3f} "
                  f"ms/step (medians) -> speed-up {speedup:.2f}x   [load avg {load_c:.1f} / {load_p:.1f}]",
                  flush=True)

    # ---- the models must be the same
    c0, p0 = rounds[thread_list[0]][0]["cerebra"], rounds[thread_list[0]][0]["pytorch"]
    cf, pf = c0["flops"], p0["flops"]
    tiled = "kernel:tiled_attention" in cf["forward_by_op"]
    checks = {
        "params": {"cerebra": c0["params"], "pytorch": p0["params"], "equal": c0["params"] == p0["params"]},
        "eval_loss": {"cerebra": c0["check"]["eval_loss"], "pytorch": p0["check"]["eval_loss"],
                      "rel_diff": rel(p0["check"]["eval_loss"], c0["check"]["eval_loss"])},
        "eval_grad_norm": {"cerebra": c0["check"]["eval_grad_norm"], "pytorch": p0["check"]["eval_grad_norm"],
                           "rel_diff": rel(p0["check"]["eval_grad_norm"], c0["check"]["eval_grad_norm"])},
        "forward_flops": {"cerebra": cf["measured_forward_per_batch"], "pytorch": pf["measured_forward_per_batch"]},
        "step_flops": {"cerebra": cf["measured_step_per_batch"],
                       "pytorch": (pf["measured_forward_per_batch"] or 0) + (pf["measured_backward_per_batch"] or 0)},
    }
    checks["forward_flops"]["equal"] = cf["measured_forward_per_batch"] == pf["measured_forward_per_batch"]
    same = (checks["params"]["equal"] and checks["eval_loss"]["rel_diff"] < 1e-4
            and checks["eval_grad_norm"]["rel_diff"] < 1e-3 and checks["forward_flops"]["equal"])
    notes = []
    if tiled:
        notes.append(f"cerebra's attention runs its tiled kernel (attention_impl {c0['config']['attention_impl']}: "
                     "online softmax, scores never materialised, recomputed in the backward: 5 tile products "
                     "against the naive backward's 4); PyTorch runs materialised softmax(q k^T) v")
    else:
        notes.append("both sides run materialised softmax(q k^T) v (cerebra's attention_impl "
                     f"{c0['config']['attention_impl']} chose the naive core at this length)")
    notes.append("cerebra's counting allocator keeps freed blocks of >= 1 MiB for reuse (CEREBRA_BLOCK_CACHE=0 turns "
                 "it off); PyTorch uses the default CPU allocator")
    notes.append(f"OpenMP wait policy: cerebra {c0.get('openmp_wait_policy', '?')}, pytorch "
                 f"{p0['openmp_wait_policy']} (--pytorch-omp-wait {args.pytorch_omp_wait})")
    notes.append("both sides: the same libtorch_cpu and BLAS (" + os.path.basename(c0["blas"]) + " / " +
                 os.path.basename(p0["blas"]) + "), the first batch_size training rows every step, batch "
                 "construction not timed")

    print(f"\nsame model: parameters {c0['params']} (cerebra) = {p0['params']} (pytorch)"
          f" {'OK' if checks['params']['equal'] else 'DIFFER'}; eval loss {c0['check']['eval_loss']:.6g} vs "
          f"{p0['check']['eval_loss']:.6g} (rel {checks['eval_loss']['rel_diff']:.1e}); gradient norm "
          f"{c0['check']['eval_grad_norm']:.6g} vs {p0['check']['eval_grad_norm']:.6g} "
          f"(rel {checks['eval_grad_norm']['rel_diff']:.1e})")
    print(f"FLOPs per step (matmul-class, 2 per multiply-add): forward {cf['measured_forward_per_batch']:.6g} vs "
          f"{pf['measured_forward_per_batch']:.6g} {'equal' if checks['forward_flops']['equal'] else 'DIFFER'}; "
          f"forward + backward {checks['step_flops']['cerebra']:.6g} vs {checks['step_flops']['pytorch']:.6g}")
    for n in notes:
        print("note: " + n)
    if not same:
        print("WARNING: the two models do not match (see above); the times are not comparable", file=sys.stderr)

    print(f"\n{'threads':>7} {'cerebra ms':>11} {'pytorch ms':>11} {'speed-up':>9}   {'per round':<24} "
          f"{'p10 ms c/p':>15} {'p10 ratio':>9} {'cerebra fwd/bwd/opt %':>22} {'pytorch fwd/bwd/opt %':>22}")
    summary = {}
    for t in thread_list:
        rs = rounds[t]
        cm = statistics.median([x["cerebra"]["median_ms"] for x in rs])
        pm = statistics.median([x["pytorch"]["median_ms"] for x in rs])
        sp = [x["speedup"] for x in rs]

        def shares(side):
            ph = rs[-1][side]["phases"]
            return "/".join(f"{100 * ph[k]['share']:.0f}" for k in ("forward", "backward", "optimizer"))

        # The 10th percentile of every timed step of every round: under load the fastest steps are the ones least
        # slowed by other processes, a second view of the same comparison.
        c10, p10 = (percentile([v for x in rs for v in x[side]["step_ms"]], 0.1) for side in ("cerebra", "pytorch"))
        summary[t] = {"cerebra_median_ms": cm, "pytorch_median_ms": pm, "speedup_per_round": sp,
                      "speedup_median": statistics.median(sp), "cerebra_p10_ms": c10, "pytorch_p10_ms": p10,
                      "speedup_p10": p10 / c10}
        print(f"{t:>7} {cm:>11.3f} {pm:>11.3f} {statistics.median(sp):>8.2f}x   "
              f"{', '.join(f'{s:.2f}' for s in sp):<24} {f'{c10:.4g}/{p10:.4g}':>15} {p10 / c10:>8.2f}x "
              f"{shares('cerebra'):>22} {shares('pytorch'):>22}")
    print("speed-up = PyTorch median ms per step / cerebra's, per interleaved round (their median shown); p10 = the "
          "10th percentile of all timed steps of a side; the machine's load falls on both sides")

    out = args.out or os.path.join(REPO, "runs", "compare-pytorch", f"{first['task']}-{first['model']}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    doc = {"command": " ".join([os.path.relpath(__file__, REPO)] + sys.argv[1:]),
           "cerebra_args": config_args, "pytorch_omp_wait": args.pytorch_omp_wait, "warmup": args.warmup,
           "steps": args.steps, "rounds": args.rounds,
           "same_model": same, "checks": checks, "notes": notes, "summary": summary,
           "runs": {str(t): rs for t, rs in rounds.items()}}
    with open(out, "w") as f:
        json.dump(doc, f, indent=2)
    print(f"wrote {out}")
    for name in os.listdir(tmp):
        os.remove(os.path.join(tmp, name))
    os.rmdir(tmp)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
