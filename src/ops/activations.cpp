// See include/cerebra/ops/activations.h.
#include "cerebra/ops/activations.h"

#include <torch/torch.h>

namespace cerebra::ops {

torch::Tensor gelu(const torch::Tensor& x) {
  auto y = torch::gelu(x);
  if (y.requires_grad()) y.register_hook([](const torch::Tensor& g) { return g.contiguous(); });
  return y;
}

}  // namespace cerebra::ops
