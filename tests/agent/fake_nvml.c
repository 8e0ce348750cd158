/* A FAKE libnvidia-ml: the NVML functions outpostd's inventory calls, answering for two GPUs
 * that are not there (no GPU on the test machines). GPU 0 is a whole H100; GPU 1 is in MIG mode
 * with two instances. FAKE_NVML_INIT_ERROR=N makes nvmlInit_v2 fail with NVML error N. Only
 * tests/agent/nvml_test.cc loads it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct FakeDevice {
  const char* name;
  const char* uuid;
  unsigned long long total;
  int mig_mode;
  int parent;  /* -1 for a whole GPU, else its GPU's index */
} FakeDevice;

typedef struct NvmlMemory {
  unsigned long long total, free, used;
} NvmlMemory;

static FakeDevice devices[] = {
    {"NVIDIA H100 80GB HBM3 (FAKE)", "GPU-00000000-fake-0000-0000-000000000000", 85520809984ULL, 0, -1},
    {"NVIDIA A100-SXM4-40GB (FAKE)", "GPU-11111111-fake-1111-1111-111111111111", 42949672960ULL, 1, -1},
    {"MIG 3g.20gb (FAKE)", "MIG-22222222-fake-2222-2222-222222222222", 20937965568ULL, 0, 1},
    {"MIG 3g.20gb (FAKE)", "MIG-33333333-fake-3333-3333-333333333333", 20937965568ULL, 0, 1},
};

static int copy_text(const char* text, char* out, unsigned int size) {
  if (strlen(text) + 1 > size) return 7; /* NVML_ERROR_INSUFFICIENT_SIZE */
  strcpy(out, text);
  return 0;
}

int nvmlInit_v2(void) {
  const char* error = getenv("FAKE_NVML_INIT_ERROR");
  return error != NULL ? atoi(error) : 0;
}
int nvmlShutdown(void) { return 0; }
int nvmlDeviceGetCount_v2(unsigned int* count) {
  *count = 2;
  return 0;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, FakeDevice** device) {
  if (index >= 2) return 2; /* NVML_ERROR_INVALID_ARGUMENT */
  *device = &devices[index];
  return 0;
}
int nvmlDeviceGetName(FakeDevice* device, char* name, unsigned int size) {
  return copy_text(device->name, name, size);
}
int nvmlDeviceGetUUID(FakeDevice* device, char* uuid, unsigned int size) {
  return copy_text(device->uuid, uuid, size);
}
int nvmlDeviceGetMemoryInfo(FakeDevice* device, NvmlMemory* memory) {
  memory->total = device->total;
  memory->used = device->total / 10;
  memory->free = device->total - memory->used;
  return 0;
}
int nvmlDeviceGetMigMode(FakeDevice* device, unsigned int* current, unsigned int* pending) {
  *current = (unsigned int)device->mig_mode;
  *pending = (unsigned int)device->mig_mode;
  return 0;
}
int nvmlDeviceGetMaxMigDeviceCount(FakeDevice* device, unsigned int* count) {
  *count = device->mig_mode ? 7 : 0; /* slots; only two hold an instance */
  return 0;
}
int nvmlDeviceGetMigDeviceHandleByIndex(FakeDevice* device, unsigned int index,
                                        FakeDevice** mig) {
  const int parent = (int)(device - devices);
  unsigned int seen = 0;
  for (unsigned int i = 0; i < sizeof devices / sizeof devices[0]; ++i) {
    if (devices[i].parent != parent) continue;
    if (seen++ == index) {
      *mig = &devices[i];
      return 0;
    }
  }
  return 6; /* NVML_ERROR_NOT_FOUND: an empty MIG slot */
}
