// Measured FLOPs: counted from the matmul-class ATen ops that actually ran, read off their input shapes through
// ATen's RecordFunction observers (independent of any module's own FLOP arithmetic), plus what the project's own
// kernels report through add_kernel_flops().
//
// Counted ops (2 FLOPs per multiply-add): aten::mm, addmm, bmm, baddbmm, addbmm, mv, addmv, dot, and
// aten::convolution. Ops nested inside a counted op on the same thread are not counted twice.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace cerebra {

class FlopCounter {
 public:
  // Starts counting on construction, stops on destruction. Counters do not nest.
  FlopCounter();
  ~FlopCounter();
  FlopCounter(const FlopCounter&) = delete;
  FlopCounter& operator=(const FlopCounter&) = delete;

  double total() const;
  // FLOPs per op name, e.g. {"aten::addmm": 1.2e6, "kernel:tiled_attention": 3e7}.
  std::map<std::string, double> by_op() const;
};

// Called by the project's own kernels (whose inner products are not ATen ops) with the FLOPs they executed.
// A no-op when no FlopCounter is active.
void add_kernel_flops(const char* kernel_name, double flops);

}  // namespace cerebra
