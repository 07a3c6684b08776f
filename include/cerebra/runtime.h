// Process-level facts every run reports: thread count, the BLAS library actually loaded, machine, memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace cerebra {

// Sets LibTorch's intra-op thread count (0 = all cores) and returns the count in effect.
int set_threads(int requested);
int available_cores();

// Path of the BLAS shared library mapped into this process after a GEMM has run (read from /proc/self/maps),
// e.g. ".../openblas-openmp/libblas.so.3". Empty if none is mapped.
std::string loaded_blas_library();
bool blas_is_openblas();
// Throws with an explanation when the reference BLAS (ten times slower) would be used.
void require_openblas();

// Measured single-thread-count GEMM throughput: GFLOP/s of an n×n fp32 matmul with the current thread setting.
double measure_gemm_gflops(int64_t n = 1024, int repeats = 5);

std::string machine_description();  // CPU model name and core count
std::string torch_version();

// Peak resident set size of this process in bytes (VmHWM), and a reset of that peak (Linux clear_refs; free heap
// memory is returned to the system first, so the next peak is that of the work that follows).
int64_t peak_rss_bytes();
void reset_peak_rss();

// glibc serves blocks above its mmap threshold with fresh mmap()s and unmaps them on free, so a training step that
// allocates the same large tensors each time pays page faults and kernel zeroing for every page, every step (dense
// attention at n = 1024 spent over a third of its time there). This keeps large blocks in the heap and freed memory
// in the process (mallopt: M_MMAP_MAX = 0, M_TRIM_THRESHOLD = INT_MAX): the next step reuses it. The cost is a
// higher resident set (the heap's high-water mark stays mapped). Set CEREBRA_MALLOC_RETAIN=0 to keep glibc's
// defaults. Idempotent; install_counting_allocator() calls it.
void retain_freed_memory();

// Counting CPU allocator: installed once, it sees every CPU tensor allocation.
void install_counting_allocator();
bool counting_allocator_installed();
int64_t current_tensor_bytes();
int64_t peak_tensor_bytes();
void reset_peak_tensor_bytes();  // peak := current

}  // namespace cerebra
