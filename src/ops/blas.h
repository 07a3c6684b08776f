// Row-major GEMM on raw pointers, for the tiles of the project's CPU kernels. Not a public header.
//
// It calls the same BLAS that LibTorch's own matmuls use (the system libblas.so.3, a dependency of libtorch_cpu,
// OpenBLAS here), without the dispatcher, allocation and RecordFunction overhead of one at::mm per tile. Because
// these calls are not ATen ops, the FLOP counter does not see them: callers report what ran with
// cerebra::add_kernel_flops().
#pragma once

#include <cstdint>

namespace cerebra::ops::blas {

// C (M x N) = alpha * op(A) * op(B) + beta * C, where op(A) is (M x K) and op(B) is (K x N); every matrix is
// row-major with the given leading dimension (elements between consecutive rows of the stored matrix).
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc);

// Whether the BLAS symbols were found (otherwise a plain loop runs: correct, much slower).
bool available();

}  // namespace cerebra::ops::blas
