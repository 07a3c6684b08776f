#include "blas.h"

#include <c10/util/Exception.h>
#include <dlfcn.h>

#include <limits>

namespace cerebra::ops::blas {

namespace {

// Fortran BLAS interface (LP64: 32-bit integers), column-major.
using sgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                          const int*, const float*, const int*, const float*, float*, const int*);
using dgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
                          const int*, const double*, const int*, const double*, double*, const int*);

// Looked up once in the symbols the process already has: libtorch_cpu links libblas.so.3, so its sgemm_/dgemm_
// are the ones at::mm uses. The project's CMake does not link BLAS itself.
template <typename Fn>
Fn lookup(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, name));
}
sgemm_fn sgemm_ptr() {
  static const sgemm_fn f = lookup<sgemm_fn>("sgemm_");
  return f;
}
dgemm_fn dgemm_ptr() {
  static const dgemm_fn f = lookup<dgemm_fn>("dgemm_");
  return f;
}

int as_int(int64_t x) {
  TORCH_CHECK(x >= 0 && x <= std::numeric_limits<int>::max(), "blas::gemm: dimension ", x, " exceeds 32-bit BLAS");
  return static_cast<int>(x);
}

// The fallback and the degenerate cases: C = alpha * op(A) op(B) + beta * C with plain loops.
template <typename T>
void gemm_loops(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                int64_t ldb, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      T acc = 0;
      for (int64_t p = 0; p < K; ++p)
        acc += (ta ? A[p * lda + i] : A[i * lda + p]) * (tb ? B[j * ldb + p] : B[p * ldb + j]);
      T& c = C[i * ldc + j];
      c = alpha * acc + (beta == T(0) ? T(0) : beta * c);
    }
  }
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands, keep the flags.
template <typename T, typename Fn>
void gemm_impl(Fn fn, bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
               int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (fn == nullptr || K == 0) return gemm_loops(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  const char opa = ta ? 'T' : 'N', opb = tb ? 'T' : 'N';
  const int m = as_int(N), n = as_int(M), k = as_int(K);
  const int ld_b = as_int(ldb), ld_a = as_int(lda), ld_c = as_int(ldc);
  fn(&opb, &opa, &m, &n, &k, &alpha, B, &ld_b, A, &ld_a, &beta, C, &ld_c);
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_impl(sgemm_ptr(), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  gemm_impl(dgemm_ptr(), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

bool available() { return sgemm_ptr() != nullptr && dgemm_ptr() != nullptr; }

}  // namespace cerebra::ops::blas
