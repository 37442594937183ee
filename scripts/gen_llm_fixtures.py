#!/usr/bin/python3
"""Reference fixtures for orchard's decoder LM (tests/llm/test_llm_reference.c).

Builds the same model as src/llm/model.c in plain PyTorch (the Hugging Face
Llama architecture: pre-RMSNorm, grouped-query attention with half-split RoPE,
optional Qwen3-style QK-norm before RoPE, SwiGLU, final RMSNorm, tied or
separate lm_head, no biases, HF tensor names), for a tiny config in two
variants, and writes per variant tests/llm/fixtures/<variant>/:

  config.json            HF Llama keys plus "qk_norm" (what src/llm/config.c reads)
  model.safetensors      the float32 weights
  reference.safetensors  ids, targets (I32), logits, loss, grad.<param> for
                         every parameter, adam_losses [10] (F32)

The weights are float32 (what orchard loads); the reference is computed in
float64 from those same values and cast to float32 when saved, so the fixture
carries no float32 rounding of its own. AdamW: lr 1e-2, betas (0.9, 0.95),
eps 1e-8, weight decay 0.1 on 2-D weights and 0 on 1-D norm weights, no
clipping, the same batch every step, the loss recorded before each step.

Run with Debian's interpreter (python3-torch): /usr/bin/python3 scripts/gen_llm_fixtures.py
The `safetensors` package is not needed; the files are written with struct+json.
"""
import json
import math
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_ROOT = os.path.join(HERE, "..", "tests", "llm", "fixtures")

# Small enough that both variants together stay well under 200 KB, yet with
# GQA (4 query heads on 2 KV heads) and head_dim (6) != hidden / heads (5) so
# that every shape path is exercised.
BASE_CONFIG = {
    "hidden_size": 20,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 6,
    "intermediate_size": 32,
    "vocab_size": 41,
    "max_position_embeddings": 32,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
}
VARIANTS = {
    "tied": {"tie_word_embeddings": True, "qk_norm": False},
    # Non-default theta and eps: checks that config.json's values reach every
    # RoPE and norm (also the QK-norms), and an eps large enough that putting it
    # in the wrong place (outside the square root) moves the logits past 1e-4.
    "untied_qknorm": {"tie_word_embeddings": False, "qk_norm": True, "rope_theta": 10000.0, "rms_norm_eps": 1e-3},
}
BATCH, SEQ = 2, 16
ADAM_STEPS, LR, BETAS, ADAM_EPS, WD = 10, 1e-2, (0.9, 0.95), 1e-8, 0.1
IGNORE = -100


def param_specs(c):
    """(name, shape) of every parameter, in orchard's order (src/llm/model.c)."""
    D, hd, F, V = c["hidden_size"], c["head_dim"], c["intermediate_size"], c["vocab_size"]
    Hq, Hkv = c["num_attention_heads"], c["num_key_value_heads"]
    specs = [("model.embed_tokens.weight", (V, D))]
    for l in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % l
        specs += [(p + "input_layernorm.weight", (D,)),
                  (p + "self_attn.q_proj.weight", (Hq * hd, D)),
                  (p + "self_attn.k_proj.weight", (Hkv * hd, D)),
                  (p + "self_attn.v_proj.weight", (Hkv * hd, D)),
                  (p + "self_attn.o_proj.weight", (D, Hq * hd))]
        if c["qk_norm"]:
            specs += [(p + "self_attn.q_norm.weight", (hd,)),
                      (p + "self_attn.k_norm.weight", (hd,))]
        specs += [(p + "post_attention_layernorm.weight", (D,)),
                  (p + "mlp.gate_proj.weight", (F, D)),
                  (p + "mlp.up_proj.weight", (F, D)),
                  (p + "mlp.down_proj.weight", (D, F))]
    specs.append(("model.norm.weight", (D,)))
    if not c["tie_word_embeddings"]:
        specs.append(("lm_head.weight", (V, D)))
    return specs


def init_params(c, seed):
    """float32 weights. Larger than a training init (and norm weights away
    from 1) so that logits and gradients are far from uniform and a wrong
    norm weight, head mapping or rotation shows up clearly."""
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in param_specs(c):
        if len(shape) == 1:
            t = 1.0 + 0.2 * torch.randn(shape, generator=g, dtype=torch.float32)
        elif "embed_tokens" in name or name == "lm_head.weight":
            t = 0.5 * torch.randn(shape, generator=g, dtype=torch.float32)
        else:
            t = torch.randn(shape, generator=g, dtype=torch.float32) / math.sqrt(shape[1]) * 1.5
        params[name] = t.contiguous()
    return params


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope(x, theta):
    """x [B, T, H, hd], positions 0..T-1, the HF Llama half-split layout."""
    T, hd = x.shape[1], x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    freqs = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, :, None, :].to(x.dtype), emb.sin()[None, :, None, :].to(x.dtype)
    return x * cos + rotate_half(x) * sin


def forward(c, p, ids):
    """Logits [B, T, V] for int64 ids [B, T]; p maps names to tensors."""
    B, T = ids.shape
    D, hd = c["hidden_size"], c["head_dim"]
    Hq, Hkv = c["num_attention_heads"], c["num_key_value_heads"]
    eps, theta = c["rms_norm_eps"], c["rope_theta"]
    h = p["model.embed_tokens.weight"][ids]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for l in range(c["num_hidden_layers"]):
        pre = "model.layers.%d." % l
        x = rmsnorm(h, p[pre + "input_layernorm.weight"], eps)
        q = (x @ p[pre + "self_attn.q_proj.weight"].T).view(B, T, Hq, hd)
        k = (x @ p[pre + "self_attn.k_proj.weight"].T).view(B, T, Hkv, hd)
        v = (x @ p[pre + "self_attn.v_proj.weight"].T).view(B, T, Hkv, hd)
        if c["qk_norm"]:
            q = rmsnorm(q, p[pre + "self_attn.q_norm.weight"], eps)
            k = rmsnorm(k, p[pre + "self_attn.k_norm.weight"], eps)
        q, k = rope(q, theta), rope(k, theta)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, hd]
        rep = Hq // Hkv  # query head i reads KV head i // rep (HF repeat_kv)
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(~causal, float("-inf"))
        a = torch.softmax(s, dim=-1) @ v  # [B, Hq, T, hd]
        a = a.transpose(1, 2).reshape(B, T, Hq * hd)
        h = h + a @ p[pre + "self_attn.o_proj.weight"].T
        x = rmsnorm(h, p[pre + "post_attention_layernorm.weight"], eps)
        gate = x @ p[pre + "mlp.gate_proj.weight"].T
        up = x @ p[pre + "mlp.up_proj.weight"].T
        h = h + (torch.nn.functional.silu(gate) * up) @ p[pre + "mlp.down_proj.weight"].T
    h = rmsnorm(h, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if c["tie_word_embeddings"] else p["lm_head.weight"]
    return h @ head.T


def loss_of(logits, targets):
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=IGNORE)


def make_batch(c, seed):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, c["vocab_size"], (BATCH, SEQ + 1), generator=g)
    ids, targets = seq[:, :SEQ].clone(), seq[:, 1:].clone()
    # Ignored positions: a "prompt" at the start of row 0, scattered ones in row 1.
    targets[0, 0:3] = IGNORE
    targets[1, 5] = IGNORE
    targets[1, SEQ - 1] = IGNORE
    return ids, targets


def reference(c, params32, ids, targets):
    """logits, loss, grads after one forward/backward, then the AdamW losses; float64."""
    names = [n for n, _ in param_specs(c)]
    p = {n: params32[n].double().clone().requires_grad_(True) for n in names}
    logits = forward(c, p, ids)
    loss = loss_of(logits, targets)
    loss.backward()
    grads = {n: p[n].grad.detach().clone() for n in names}
    logits, loss = logits.detach().clone(), loss.detach().clone()

    for t in p.values():
        t.grad = None
    decay = [p[n] for n in names if p[n].dim() >= 2]
    no_decay = [p[n] for n in names if p[n].dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=ADAM_EPS)
    losses = []
    for _ in range(ADAM_STEPS):
        opt.zero_grad(set_to_none=True)
        step_loss = loss_of(forward(c, p, ids), targets)
        losses.append(step_loss.item())
        step_loss.backward()
        opt.step()
    return logits, loss, grads, torch.tensor(losses, dtype=torch.float64)


# ---- safetensors ---------------------------------------------------------------

ST_DTYPES = {torch.float32: "F32", torch.int32: "I32"}


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, tensor); the data follow in the given order."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors:
        t = t.contiguous()
        raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # the buffer starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def write_variant(name, overrides, seed):
    c = dict(BASE_CONFIG, **overrides)
    out = os.path.join(OUT_ROOT, name)
    os.makedirs(out, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
              "attention_bias": False, "mlp_bias": False, "torch_dtype": "float32"}
    config.update(c)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")

    params = init_params(c, seed)
    names = [n for n, _ in param_specs(c)]
    write_safetensors(os.path.join(out, "model.safetensors"), [(n, params[n]) for n in names],
                      {"format": "pt", "producer": "scripts/gen_llm_fixtures.py"})

    ids, targets = make_batch(c, seed + 1000)
    logits, loss, grads, losses = reference(c, params, ids, targets)
    ref = [("ids", ids.to(torch.int32)), ("targets", targets.to(torch.int32)),
           ("logits", logits.float()), ("loss", loss.float().reshape(()))]
    ref += [("grad." + n, grads[n].float()) for n in names]
    ref.append(("adam_losses", losses.float()))
    write_safetensors(os.path.join(out, "reference.safetensors"), ref,
                      {"torch": torch.__version__, "producer": "scripts/gen_llm_fixtures.py"})
    print("%s: loss %.6f, adam losses %s" % (name, loss.item(), " ".join("%.4f" % v for v in losses.tolist())))


def main():
    torch.manual_seed(0)
    for i, (name, overrides) in enumerate(VARIANTS.items()):
        write_variant(name, overrides, seed=1234 + i)
    return 0


if __name__ == "__main__":
    sys.exit(main())
