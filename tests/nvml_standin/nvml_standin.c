/* A stand-in for libnvidia-ml with fixed answers, for tests on hosts without a GPU.
 *
 * Two devices:
 *   0: gpu utilization 42 %, memory utilization 13 %, 1024 MiB used of 4096 MiB
 *   1: gpu utilization 7 %,  memory utilization 2 %,  512 MiB used of 16384 MiB
 * With NVML_STANDIN_FAIL_INIT=1 in the environment, nvmlInit_v2 answers 999
 * (NVML_ERROR_UNKNOWN). Calls before a successful init answer NVML_ERROR_UNINITIALIZED.
 * Only the entry points tserve uses are exported, with NVML's C signatures. */

#include <stdlib.h>
#include <string.h>

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_UNKNOWN 999

#define MIB (1024ULL * 1024ULL)

typedef int nvmlReturn_t;

typedef struct nvmlDevice_st {
  unsigned int gpu_util;
  unsigned int memory_util;
  unsigned long long total;
  unsigned long long used;
} * nvmlDevice_t;

typedef struct {
  unsigned int gpu;
  unsigned int memory;
} nvmlUtilization_t;

typedef struct {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
} nvmlMemory_t;

static struct nvmlDevice_st devices[] = {
    {42, 13, 4096 * MIB, 1024 * MIB},
    {7, 2, 16384 * MIB, 512 * MIB},
};
static const unsigned int device_count = sizeof(devices) / sizeof(devices[0]);
static int init_count = 0;

nvmlReturn_t nvmlInit_v2(void) {
  const char* fail = getenv("NVML_STANDIN_FAIL_INIT");
  if (fail != NULL && strcmp(fail, "1") == 0) return NVML_ERROR_UNKNOWN;
  ++init_count;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlShutdown(void) {
  if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
  --init_count;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int* count) {
  if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
  if (count == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  *count = device_count;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t* device) {
  if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
  if (device == NULL || index >= device_count) return NVML_ERROR_INVALID_ARGUMENT;
  *device = &devices[index];
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t* utilization) {
  if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
  if (device == NULL || utilization == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  utilization->gpu = device->gpu_util;
  utilization->memory = device->memory_util;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t* memory) {
  if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
  if (device == NULL || memory == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  memory->total = device->total;
  memory->used = device->used;
  memory->free = device->total - device->used;
  return NVML_SUCCESS;
}

const char* nvmlErrorString(nvmlReturn_t result) {
  switch (result) {
    case NVML_SUCCESS:
      return "Success";
    case NVML_ERROR_UNINITIALIZED:
      return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT:
      return "Invalid Argument";
    case NVML_ERROR_UNKNOWN:
      return "Unknown Error";
    default:
      return "Unknown Error";
  }
}
