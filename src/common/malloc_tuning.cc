#include "common/malloc_tuning.h"

#include <malloc.h>

namespace tserve {

void TuneMallocForServer() {
  // Blocks up to 64 MiB come from the heap, and up to 128 MiB of free heap top is kept.
  mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 128 * 1024 * 1024);
  // Keep up to 64 MiB free at the top of every heap. Worker threads allocate from their
  // own arenas, made of 64 MiB heaps; glibc unmaps such a heap as soon as it is entirely
  // free, whatever M_TRIM_THRESHOLD says, and an inference that needs a fresh heap then
  // faults every page of it back in (resnet18: up to ~1,500 faults per request, 15-25 us
  // each on this VM). Measured: resnet18 through tserve 0.81-0.93x of a raw LibTorch loop
  // without this, 0.92-1.00x with it (docs/performance.md).
  mallopt(M_TOP_PAD, 64 * 1024 * 1024);
}

}  // namespace tserve
