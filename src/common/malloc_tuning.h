#pragma once

namespace tserve {

// Keeps glibc from returning large freed blocks to the kernel at once. A scrape body of
// a few hundred KiB is allocated and freed per request; with glibc's defaults each one is
// a fresh mmap whose pages fault in one by one (14-26 us per fault measured on this VM),
// which cost more than rendering it. Called once at startup (main, and the benchmarks so
// they measure what the server does).
void TuneMallocForServer();

}  // namespace tserve
