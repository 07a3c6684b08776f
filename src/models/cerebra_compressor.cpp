// The Cerebra compressor C_φ: X (B, n, d) → X̃ (B, m, d_c), variants conv / attnpool / hybrid, and its optional
// reconstruction loss. Padding never contributes to a slot.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cerebra/models/cerebra_layer.h"
#include "cerebra/models/quant.h"

namespace cerebra {

namespace F = torch::nn::functional;

namespace {

double masked_value(const torch::Tensor& t) { return t.scalar_type() == torch::kHalf ? -6.0e4 : -1.0e9; }

}  // namespace

CerebraCompressorImpl::CerebraCompressorImpl(const CerebraOptions& o) : opts(o) {
  const int64_t d = o.d_model, dc = o.compressed_width();
  if (o.compressor != CompressorKind::kAttnPool) {
    dwconv = register_module(
        "dwconv", torch::nn::Conv1d(torch::nn::Conv1dOptions(d, d, o.conv_kernel).padding(o.conv_kernel / 2).groups(d)));
    torch::NoGradGuard g;  // start as the identity: the compressor begins as plain pooling
    dwconv->weight.zero_();
    dwconv->weight.select(2, o.conv_kernel / 2).fill_(1.0);
    dwconv->bias.zero_();
  }
  if (o.compressor != CompressorKind::kConv) {
    queries = register_parameter("queries", torch::randn({o.pool_bank(), d}));
  }
  proj = register_module("proj", torch::nn::Linear(d, dc));
  up = register_module("up", torch::nn::Linear(dc, d));
}

// x: (B, n, d), mask: (B, n) bool -> slots (B, m, d_c), slot_mask (B, m), rec_loss
CompressedMemory CerebraCompressorImpl::forward(const torch::Tensor& x, const torch::Tensor& mask,
                                                bool with_reconstruction) {
  const int64_t B = x.size(0), n = x.size(1), d = x.size(2), h = opts.n_heads, e = d / h;
  const int64_t m = opts.memory_slots(n);
  const auto maskf = mask.to(x.scalar_type());  // (B, n)
  auto src = x * maskf.unsqueeze(-1);           // (B, n, d), padding zeroed
  if (dwconv) {
    // Depthwise conv over the sequence: (B, d, n) -> (B, d, n); padding stays zero afterwards.
    src = dwconv->forward(src.transpose(1, 2)).transpose(1, 2) * maskf.unsqueeze(-1);
  }

  // Each sequence gets the slots of its own length, m_b = memory_slots(len_b), so that its memory does not depend on
  // the other sequences of the batch or on the padded length; the batch holds m = memory_slots(n) >= m_b slots and
  // a sequence's slots beyond its own m_b are masked out.
  const auto lengths = mask.sum(1).to(torch::kLong).cpu().contiguous();  // (B)
  const int64_t* len_of = lengths.data_ptr<int64_t>();
  std::vector<int64_t> len_b(static_cast<size_t>(B)), m_b(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    len_b[b] = std::max<int64_t>(1, len_of[b]);
    m_b[b] = std::min(m, opts.memory_slots(len_b[b]));
  }
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(x.device());

  CompressedMemory mem;
  torch::Tensor pooled;   // (B, m, d)
  torch::Tensor attn;     // (B, h, m, n) pooling weights (attnpool/hybrid)
  torch::Tensor segment;  // (B, n) conv: the slot each position pools into
  if (opts.compressor == CompressorKind::kConv) {
    // Masked mean over m_b contiguous segments of P_b = ceil(len_b / m_b) tokens.
    std::vector<int64_t> per(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) per[b] = (len_b[b] + m_b[b] - 1) / m_b[b];
    auto P = torch::tensor(per, long_opts).unsqueeze(1);                                  // (B, 1)
    auto last = torch::tensor(m_b, long_opts).unsqueeze(1) - 1;                           // (B, 1)
    segment = torch::minimum(torch::div(torch::arange(n, long_opts).unsqueeze(0), P, "floor"), last);  // (B, n)
    auto flat = (segment + torch::arange(B, long_opts).unsqueeze(1) * m).reshape({B * n});  // into (B·m)
    pooled = torch::zeros({B * m, d}, src.options()).index_add(0, flat, src.reshape({B * n, d})).view({B, m, d});
    auto cnt = torch::zeros({B * m}, maskf.options()).index_add(0, flat, maskf.reshape({B * n})).view({B, m});
    pooled = pooled / cnt.clamp_min(1.0).unsqueeze(-1);
    mem.slot_mask = cnt > 0;
  } else {
    // m_b learned queries attend (h heads, keys = values = src) over the real tokens; sequences with the same m_b
    // are pooled together.
    const int64_t bank = queries.size(0);
    auto kv_all = src.view({B, n, h, e}).permute({0, 2, 1, 3});  // (B, h, n, e)
    pooled = torch::zeros({B, m, d}, src.options());
    attn = torch::zeros({B, h, m, n}, src.options());
    auto slot_real = torch::zeros({B, m}, maskf.options());
    std::vector<int64_t> groups(m_b);
    std::sort(groups.begin(), groups.end());
    groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
    for (const int64_t mg : groups) {
      std::vector<int64_t> members;
      for (int64_t b = 0; b < B; ++b)
        if (m_b[b] == mg) members.push_back(b);
      auto idx = torch::tensor(members, long_opts);
      const auto Bg = static_cast<int64_t>(members.size());
      torch::Tensor qb;  // (mg, d)
      if (mg <= bank) {
        qb = queries.narrow(0, 0, mg);
      } else {
        qb = F::interpolate(queries.t().unsqueeze(0), F::InterpolateFuncOptions()
                                                          .size(std::vector<int64_t>{mg})
                                                          .mode(torch::kLinear)
                                                          .align_corners(true))
                 .squeeze(0)
                 .t();
      }
      auto q = qb.reshape({mg, h, e}).permute({1, 0, 2}) * (1.0 / std::sqrt(static_cast<double>(e)));  // (h, mg, e)
      auto kv = Bg == B ? kv_all : kv_all.index_select(0, idx);                                        // (Bg, h, n, e)
      auto mask_g = Bg == B ? mask : mask.index_select(0, idx);
      auto scores = torch::matmul(q, kv.transpose(-2, -1));                                            // (Bg, h, mg, n)
      scores = scores.masked_fill(mask_g.logical_not().view({Bg, 1, 1, n}), masked_value(scores));
      auto a = torch::softmax(scores, -1);
      auto pg = torch::matmul(a, kv).permute({0, 2, 1, 3}).reshape({Bg, mg, d});  // (Bg, mg, d)
      if (Bg == B && mg == m) {
        pooled = pg;
        attn = a;
      } else {
        pooled = pooled.index_copy(0, idx, torch::constant_pad_nd(pg, {0, 0, 0, m - mg}));
        attn = attn.index_copy(0, idx, torch::constant_pad_nd(a, {0, 0, 0, m - mg}));
      }
      auto real = (mask_g.sum(1) > 0).to(maskf.scalar_type()).unsqueeze(1).expand({Bg, mg});
      slot_real.index_copy_(0, idx, torch::constant_pad_nd(real, {0, m - mg}));
    }
    mem.slot_mask = slot_real > 0;
  }
  mem.slots = cerebra::linear(proj, pooled);  // (B, m, d_c)

  if (with_reconstruction) {
    auto up_s = cerebra::linear(up, mem.slots);  // (B, m, d)
    torch::Tensor recon;                 // (B, n, d)
    if (attn.defined()) {
      // Spread each slot back over the tokens it pooled, weights normalised over slots per token.
      auto a = attn.mean(1);                                   // (B, m, n)
      a = a / a.sum(1, /*keepdim=*/true).clamp_min(1e-12);
      recon = torch::bmm(a.transpose(1, 2).contiguous(), up_s);  // (B, n, d)
    } else {
      recon = up_s.gather(1, segment.unsqueeze(-1).expand({B, n, up_s.size(2)}));
    }
    auto err = (recon - x.detach()).pow(2).sum(-1) / static_cast<double>(d);  // (B, n)
    mem.rec_loss = (err * maskf).sum() / maskf.sum().clamp_min(1.0);
  }
  return mem;
}

}  // namespace cerebra
