// One decode step (one new token per row) through every layer of gpt_demo's lean Llama path.
//
// The same ATen ops as LeanLlama.forward's Python loop, in the same order, so the numbers
// agree; what goes away is Python's cost per op (about 4 us of ~25 ops x 30 layers, a third
// of a step on the 2-core CPU). Built on first use by gpt_demo/models/native.py with
// torch.utils.cpp_extension.load_inline and cached by PyTorch under TORCH_EXTENSIONS_DIR.
#include <torch/extension.h>

#include <limits>
#include <vector>

using at::Tensor;

// The per-layer tensors and sizes, as LeanLlama passes them (one list entry per layer).
struct Weights {
  const std::vector<Tensor>&attn_norm, &qkv_p, &qkv_sz, &o_p, &o_sz, &mlp_norm, &gu_p, &gu_sz, &d_p, &d_sz;
  int64_t heads, kv_heads, head_dim, inter, group_size;
  double eps;
  int64_t nq() const { return heads * head_dim; }
  int64_t nkv() const { return kv_heads * head_dim; }
};

// RMSNorm, the fused q/k/v matrix and RoPE on q and k at once: q (R, H, D), k and v (R, KV, D).
static std::tuple<Tensor, Tensor, Tensor> attention_inputs(const Weights& w, size_t i, const Tensor& x,
                                                           const Tensor& rot) {
  const int64_t r = x.size(0), nq = w.nq(), nkv = w.nkv();
  Tensor h = at::rms_norm(x, {x.size(1)}, w.attn_norm[i], w.eps).to(at::kBFloat16);
  Tensor qkv = at::_weight_int4pack_mm_for_cpu(h, w.qkv_p[i], w.group_size, w.qkv_sz[i]);  // (R, nq + 2 nkv)
  Tensor qk = at::view_as_complex(
      qkv.narrow(1, 0, nq + nkv).to(at::kFloat).reshape({r, w.heads + w.kv_heads, w.head_dim / 2, 2}));
  qk = at::view_as_real(qk * rot).reshape({r, w.heads + w.kv_heads, w.head_dim});
  Tensor v = qkv.narrow(1, nq + nkv, nkv).to(at::kFloat).reshape({r, w.kv_heads, w.head_dim});
  return {qk.narrow(1, 0, w.heads), qk.narrow(1, w.heads, w.kv_heads), v};
}

// The attention output projection, then the MLP, each added to the residual stream x.
static Tensor rest_of_layer(const Weights& w, size_t i, Tensor x, const Tensor& attended) {
  x = x + at::_weight_int4pack_mm_for_cpu(attended.to(at::kBFloat16), w.o_p[i], w.group_size, w.o_sz[i]);
  Tensor h = at::rms_norm(x, {x.size(1)}, w.mlp_norm[i], w.eps).to(at::kBFloat16);
  Tensor gu = at::_weight_int4pack_mm_for_cpu(h, w.gu_p[i], w.group_size, w.gu_sz[i]);
  Tensor act = at::silu(gu.narrow(1, 0, w.inter)) * gu.narrow(1, w.inter, w.inter);
  return x + at::_weight_int4pack_mm_for_cpu(act, w.d_p[i], w.group_size, w.d_sz[i]);
}

// x: (B, hidden) float32 residual stream, updated and returned.
// rot: (B, 1, D/2) complex64, e^(i pos theta) for each row's position.
// pos: (B,) int64 slots to write; uniform: every row writes slot s0 (a plain slice copy).
// mask: (B, 1, 1, end) float32, 0 where a row may attend and -inf where it may not; or empty.
// K, V: (layers, B, kv_heads, capacity, head_dim) float32.
Tensor layers_step(Tensor x, Tensor rot, Tensor pos, bool uniform, int64_t s0, Tensor mask, int64_t end,
                   const std::vector<Tensor>& attn_norm, const std::vector<Tensor>& qkv_p,
                   const std::vector<Tensor>& qkv_sz, const std::vector<Tensor>& o_p,
                   const std::vector<Tensor>& o_sz, const std::vector<Tensor>& mlp_norm,
                   const std::vector<Tensor>& gu_p, const std::vector<Tensor>& gu_sz,
                   const std::vector<Tensor>& d_p, const std::vector<Tensor>& d_sz, Tensor K, Tensor V,
                   int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t inter, double eps,
                   int64_t group_size) {
  c10::InferenceMode guard;
  const Weights w{attn_norm, qkv_p, qkv_sz, o_p, o_sz, mlp_norm, gu_p, gu_sz, d_p, d_sz,
                  heads, kv_heads, head_dim, inter, group_size, eps};
  const int64_t b = x.size(0);
  const bool masked = mask.defined() && mask.numel() > 0;
  Tensor rows = at::arange(b, pos.options());
  for (size_t i = 0; i < attn_norm.size(); ++i) {
    auto [q, k, v] = attention_inputs(w, i, x, rot);
    Tensor ki = K.select(0, i), vi = V.select(0, i);  // (B, KV, capacity, D)
    if (uniform) {
      ki.select(2, s0).copy_(k);
      vi.select(2, s0).copy_(v);
    } else {
      ki.index_put_({rows, torch::indexing::Slice(), pos}, k);
      vi.index_put_({rows, torch::indexing::Slice(), pos}, v);
    }
    Tensor scores = at::matmul(q.reshape({b, kv_heads, heads / kv_heads, head_dim}),
                               ki.narrow(2, 0, end).transpose(-1, -2));
    if (masked) scores = scores + mask;
    Tensor attended = at::matmul(at::softmax(scores, -1), vi.narrow(2, 0, end)).reshape({b, w.nq()});
    x = rest_of_layer(w, i, x, attended);
  }
  return x;
}

// One new token for each of the cache rows `slots` (the scheduler's batch): each row attends over
// exactly its own keys with its own small matmuls, so its numbers are those it gets running alone.
// x: (R, hidden); rot: (R, 1, D/2); slots, pos: (R,) int64 (pos: the slot each row writes).
Tensor slots_step(Tensor x, Tensor rot, Tensor slots, Tensor pos,
                  const std::vector<Tensor>& attn_norm, const std::vector<Tensor>& qkv_p,
                  const std::vector<Tensor>& qkv_sz, const std::vector<Tensor>& o_p,
                  const std::vector<Tensor>& o_sz, const std::vector<Tensor>& mlp_norm,
                  const std::vector<Tensor>& gu_p, const std::vector<Tensor>& gu_sz,
                  const std::vector<Tensor>& d_p, const std::vector<Tensor>& d_sz, Tensor K, Tensor V,
                  int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t inter, double eps,
                  int64_t group_size) {
  c10::InferenceMode guard;
  const Weights w{attn_norm, qkv_p, qkv_sz, o_p, o_sz, mlp_norm, gu_p, gu_sz, d_p, d_sz,
                  heads, kv_heads, head_dim, inter, group_size, eps};
  const int64_t r = x.size(0);
  std::vector<int64_t> slot(r), at_pos(r);
  for (int64_t j = 0; j < r; ++j) {
    slot[j] = slots[j].item<int64_t>();
    at_pos[j] = pos[j].item<int64_t>();
  }
  for (size_t i = 0; i < attn_norm.size(); ++i) {
    auto [q, k, v] = attention_inputs(w, i, x, rot);
    Tensor attended = at::empty({r, w.nq()}, x.options());
    for (int64_t j = 0; j < r; ++j) {
      Tensor kr = K.select(0, i).select(0, slot[j]), vr = V.select(0, i).select(0, slot[j]);  // (KV, cap, D)
      kr.select(1, at_pos[j]).copy_(k.select(0, j));
      vr.select(1, at_pos[j]).copy_(v.select(0, j));
      Tensor scores = at::matmul(q.select(0, j).reshape({kv_heads, heads / kv_heads, head_dim}),
                                 kr.narrow(1, 0, at_pos[j] + 1).transpose(-1, -2));
      attended.select(0, j).copy_(
          at::matmul(at::softmax(scores, -1), vr.narrow(1, 0, at_pos[j] + 1)).reshape({w.nq()}));
    }
    x = rest_of_layer(w, i, x, attended);
  }
  return x;
}
