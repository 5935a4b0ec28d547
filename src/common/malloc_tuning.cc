#include "common/malloc_tuning.h"

#include <malloc.h>

namespace tserve {

void TuneMallocForServer() {
  // Blocks up to 64 MiB come from the heap, and up to 128 MiB of free heap top is kept.
  mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 128 * 1024 * 1024);
}

}  // namespace tserve
