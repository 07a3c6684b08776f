// The Cerebra compressor C_φ: X (B, n, d) → X̃ (B, m, d_c), variants conv / attnpool / hybrid, and its optional
// reconstruction loss. Padding never contributes to a slot.
#include <torch/torch.h>

#include <cmath>

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

  CompressedMemory mem;
  torch::Tensor pooled;  // (B, m, d)
  torch::Tensor attn;    // (B, h, m, n) pooling weights (attnpool/hybrid)
  const int64_t P = (n + m - 1) / m;  // conv: tokens per segment
  if (opts.compressor == CompressorKind::kConv) {
    // Masked mean over m contiguous segments of P tokens; the tail is zero-padded to m·P.
    const int64_t L = m * P;
    auto s = torch::constant_pad_nd(src, {0, 0, 0, L - n});                        // (B, L, d)
    auto cnt = torch::constant_pad_nd(maskf, {0, L - n}).view({B, m, P}).sum(-1);  // (B, m)
    pooled = s.view({B, m, P, d}).sum(2) / cnt.clamp_min(1.0).unsqueeze(-1);
    mem.slot_mask = cnt > 0;
  } else {
    // m learned queries attend (h heads, keys = values = src) over the real tokens.
    const int64_t bank = queries.size(0);
    torch::Tensor qb;  // (m, d)
    if (m <= bank) {
      qb = queries.narrow(0, 0, m);
    } else {
      qb = F::interpolate(queries.t().unsqueeze(0),
                          F::InterpolateFuncOptions().size(std::vector<int64_t>{m}).mode(torch::kLinear).align_corners(true))
               .squeeze(0)
               .t();
    }
    auto q = qb.reshape({m, h, e}).permute({1, 0, 2}) * (1.0 / std::sqrt(static_cast<double>(e)));  // (h, m, e)
    auto kv = src.view({B, n, h, e}).permute({0, 2, 1, 3});                                          // (B, h, n, e)
    auto scores = torch::matmul(q, kv.transpose(-2, -1));                                            // (B, h, m, n)
    scores = scores.masked_fill(mask.logical_not().view({B, 1, 1, n}), masked_value(scores));
    attn = torch::softmax(scores, -1);
    pooled = torch::matmul(attn, kv).permute({0, 2, 1, 3}).reshape({B, m, d});  // (B, m, d)
    mem.slot_mask = (mask.sum(1) > 0).unsqueeze(1).expand({B, m});
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
      recon = up_s.repeat_interleave(P, 1).narrow(1, 0, n);
    }
    auto err = (recon - x.detach()).pow(2).sum(-1) / static_cast<double>(d);  // (B, n)
    mem.rec_loss = (err * maskf).sum() / maskf.sum().clamp_min(1.0);
  }
  return mem;
}

}  // namespace cerebra
