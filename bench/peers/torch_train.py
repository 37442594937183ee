#!/usr/bin/env python3
"""PyTorch peer for bench_train: the same decoder LM (pre-RMSNorm, GQA,
RoPE, SwiGLU, tied embeddings) trained with AdamW on random tokens; prints
one JSON line with tokens/s and peak RSS. Run with Debian's python3-torch:
  /usr/bin/python3 bench/peers/torch_train.py --dim 288 --layers 6 ... """
import argparse, json, resource, time
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
for k, v in [("dim", 288), ("layers", 6), ("heads", 6), ("kv_heads", 6), ("ffn", 768), ("vocab", 4096),
             ("seq", 256), ("batch", 8), ("steps", 10), ("warmup", 2), ("threads", 2)]:
    p.add_argument("--" + k, type=int, default=v)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
hd = a.dim // a.heads

def rms(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

def rope(x, cos, sin):
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin

class Block(nn.Module):
    def __init__(s):
        super().__init__()
        s.n1 = nn.Parameter(torch.ones(a.dim)); s.n2 = nn.Parameter(torch.ones(a.dim))
        s.q = nn.Linear(a.dim, a.heads * hd, bias=False); s.k = nn.Linear(a.dim, a.kv_heads * hd, bias=False)
        s.v = nn.Linear(a.dim, a.kv_heads * hd, bias=False); s.o = nn.Linear(a.heads * hd, a.dim, bias=False)
        s.g = nn.Linear(a.dim, a.ffn, bias=False); s.u = nn.Linear(a.dim, a.ffn, bias=False)
        s.d = nn.Linear(a.ffn, a.dim, bias=False)
    def forward(s, x, cos, sin):
        B, T, _ = x.shape
        h = rms(x, s.n1)
        q = s.q(h).view(B, T, a.heads, hd).transpose(1, 2)
        k = s.k(h).view(B, T, a.kv_heads, hd).transpose(1, 2)
        v = s.v(h).view(B, T, a.kv_heads, hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if a.kv_heads != a.heads:
            k = k.repeat_interleave(a.heads // a.kv_heads, 1); v = v.repeat_interleave(a.heads // a.kv_heads, 1)
        # torch 1.13 (Debian) has no scaled_dot_product_attention: the usual explicit form.
        att = (q @ k.transpose(-1, -2)) * (hd ** -0.5) + causal[:T, :T]
        y = att.softmax(-1) @ v
        x = x + s.o(y.transpose(1, 2).reshape(B, T, -1))
        h = rms(x, s.n2)
        return x + s.d(F.silu(s.g(h)) * s.u(h))

class LM(nn.Module):
    def __init__(s):
        super().__init__()
        s.emb = nn.Embedding(a.vocab, a.dim); nn.init.normal_(s.emb.weight, std=0.02); s.blocks = nn.ModuleList([Block() for _ in range(a.layers)])
        s.norm = nn.Parameter(torch.ones(a.dim))
    def forward(s, ids, cos, sin):
        x = s.emb(ids)
        for b in s.blocks:
            x = b(x, cos, sin)
        return rms(x, s.norm) @ s.emb.weight.t()

m = LM()
inv = 1.0 / (500000.0 ** (torch.arange(0, hd, 2).float() / hd))
ang = torch.outer(torch.arange(a.seq).float(), inv)
cos = torch.cat([ang.cos(), ang.cos()], -1); sin = torch.cat([ang.sin(), ang.sin()], -1)
causal = torch.full((a.seq, a.seq), float("-inf")).triu(1)
opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
g = torch.Generator().manual_seed(1)
t0 = None
for step in range(a.warmup + a.steps):
    if step == a.warmup:
        t0 = time.perf_counter()
    ids = torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=g)
    logits = m(ids[:, :-1], cos, sin)
    loss = F.cross_entropy(logits.reshape(-1, a.vocab), ids[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
    opt.step()
dt = time.perf_counter() - t0
print(json.dumps({"tokens_per_s": a.batch * a.seq * a.steps / dt, "peak_rss_mb":
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "torch": torch.__version__,
                  "loss": float(loss)}))
