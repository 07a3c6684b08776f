// Activations whose LibTorch form needs a guard on this LibTorch (1.13, CPU).
#pragma once

#include <torch/types.h>

namespace cerebra::ops {

// GELU (exact, erf form), with a backward that is right for any layout of the incoming gradient.
// LibTorch 1.13's CPU gelu_backward hands a contiguous float input and the incoming gradient to oneDNN as dense
// buffers without looking at the gradient's strides, so a gradient laid out differently from the input (a GELU
// followed by a transpose, then a linear layer: the gradient arrives contiguous in the transposed order) is read in
// the wrong order, and past its end: wrong, sometimes non-finite gradients that change from process to process.
// Here a hook makes the incoming gradient contiguous before gelu_backward reads it (a no-op when it already is).
torch::Tensor gelu(const torch::Tensor& x);

}  // namespace cerebra::ops
