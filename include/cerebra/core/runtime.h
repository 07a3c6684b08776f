// Process-level facts every run reports: thread count, the BLAS library actually loaded, machine, memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cerebra {

// The runtime of a run: parsed from the config (keys threads, allow_slow_blas) with the rest of its spec.
struct RuntimeSpec {
  int threads = 0;               // intra-op threads, 0 = the cores idle at the start (set_threads)
  bool allow_slow_blas = false;  // run even when LibTorch is not using OpenBLAS
};
// Applies a runtime to the process: installs the counting allocator (once), sets the thread count, and checks the
// BLAS unless allowed to be slow. Returns the thread count in effect. Every command that runs a model calls this
// once with its spec.
int apply_runtime(const RuntimeSpec& spec);

// OpenMP worker threads that wait for work by spinning (libgomp's default: about 300,000 spins after each parallel
// region) hold their core while another process wants it and are descheduled in the middle of the next region: with
// one other busy process, two threads trained a small model 10x slower than one thread. Waiting passively (a worker
// sleeps between regions) bounds that. libgomp reads the policy once, when it is loaded, so a command-line program
// calls this first in main(): unless the environment already chooses (OMP_WAIT_POLICY or GOMP_SPINCOUNT set), it
// sets OMP_WAIT_POLICY=PASSIVE and executes itself again with the same arguments (on failure it carries on).
void prefer_passive_openmp_wait(char** argv);
// The OpenMP wait policy of this process as the environment sets it ("PASSIVE", "ACTIVE", "GOMP_SPINCOUNT=N", or
// "default"), for run summaries.
std::string openmp_wait_policy();

// Sets LibTorch's intra-op thread count and returns the count in effect. 0 = the cores idle at the start
// (idle_cores): on a machine where another process keeps a core busy, two threads ran 1.5x slower than one (the
// wait for the descheduled thread at every parallel region), so by default a run takes only the idle cores. An
// explicit count is used as given: the thread count changes the floating-point results in their last bits, and a
// run that must repeat bit for bit (a resume, a comparison) names it.
int set_threads(int requested);
// CPUs this process may run on (its affinity mask, as `taskset` sets it).
int available_cores();
// Of those, the number other processes left idle over `seconds` (/proc/stat), rounded, at least 1.
int idle_cores(double seconds = 0.25);

// Path of the BLAS shared library mapped into this process after a GEMM has run (read from /proc/self/maps),
// e.g. ".../openblas-openmp/libblas.so.3". Empty if none is mapped.
std::string loaded_blas_library();
bool blas_is_openblas();
// Throws with an explanation when the reference BLAS (ten times slower) would be used.
void require_openblas();

// Measured single-thread-count GEMM throughput: GFLOP/s of an n×n fp32 matmul with the current thread setting.
double measure_gemm_gflops(int64_t n = 1024, int repeats = 5);

std::string machine_description();  // CPU model name and core count
// Median of timings (0 for none): the middle value, or the mean of the two middle values.
double median(std::vector<double> v);
std::string torch_version();

// Peak resident set size of this process in bytes (VmHWM), and a reset of that peak (Linux clear_refs; cached
// blocks are released first, so the next peak is that of the work that follows).
int64_t peak_rss_bytes();
void reset_peak_rss();

// The counting allocator keeps freed blocks of 1 MiB or more for reuse by an allocation of the same size (a
// training step allocates the same large tensors as the previous one; a fresh mmap() per block and step costs page
// faults and kernel zeroing of every page: 3-5x the time of dense attention at n = 1024). The kept bytes are bounded
// by the process's peak of live tensor bytes and 8 GiB; CEREBRA_BLOCK_CACHE=0 turns the cache off. This releases them.
void release_cached_blocks();

// Counting CPU allocator: installed once, it sees every CPU tensor allocation.
void install_counting_allocator();
bool counting_allocator_installed();
int64_t current_tensor_bytes();
int64_t peak_tensor_bytes();
void reset_peak_tensor_bytes();  // peak := current

}  // namespace cerebra
