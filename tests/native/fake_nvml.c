/*
 * A FAKE libnvidia-ml.so.1: the NVML C ABI subset the Switchyard agent uses through an
 * unmodified pynvml. Built by tests/native/build.py with gcc during the test run; tests put
 * its directory on LD_LIBRARY_PATH so pynvml's CDLL("libnvidia-ml.so.1") loads it.
 *
 * Struct layouts follow pynvml's ctypes definitions (c_nvmlMemory_t, c_nvmlMemory_v2_t,
 * c_nvmlUtilization_t, c_nvmlEventData_t); return codes are NVML's (nvmlReturn_t).
 *
 * Configuration: the file named by $FAKE_NVML_CONFIG, "key=value" lines, re-read whenever
 * its modification time or size changes (so a test can change readings while a process
 * runs). Keys (defaults in brackets):
 *   init_error=N          nvmlInitWithFlags always returns N [0]
 *   init_failures=N       the first N nvmlInitWithFlags calls return DRIVER_NOT_LOADED [0]
 *   count=N               number of GPUs [1], at most 8
 *   gpuI.name, gpuI.uuid  strings [NVIDIA L4, GPU-c0ffee00-0000-0000-0000-00000000000I]
 *   gpuI.util, gpuI.mem_util                         percent [35, 20]
 *   gpuI.mem_total, gpuI.mem_used                    bytes [24 GiB, 6 GiB]
 *   gpuI.power_mw, gpuI.power_limit_mw               milliwatts [38000, 72000]
 *   gpuI.temp, gpuI.slowdown                         degrees C [52, 92]
 *   gpuI.sm_clock, gpuI.sm_clock_max                 MHz [2040, 2040]
 *   gpuI.reasons          clocks-event reasons bitmask, 0x.. accepted [0]
 *   gpuI.ecc_uncorrected, gpuI.ecc_corrected         volatile totals [0, 0]
 *   gpuI.lost=1           every call on the GPU returns GPU_IS_LOST
 *   gpuI.old_driver=1     nvmlDeviceGetCurrentClocksEventReasons returns FUNCTION_NOT_FOUND
 *                         (drivers before 535 only have ...ClocksThrottleReasons)
 *   gpuI.unsupported=a,b  these readings return NOT_SUPPORTED: utilization, memory, power,
 *                         power_limit, temperature, threshold, clock, max_clock, reasons,
 *                         ecc, events
 *   event=I:XID           one line per XID event: each new line (counted from the top) is
 *                         queued once on every event set GPU I is registered with
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef int nvmlReturn_t;
enum {
  NVML_SUCCESS = 0, NVML_ERROR_UNINITIALIZED = 1, NVML_ERROR_INVALID_ARGUMENT = 2,
  NVML_ERROR_NOT_SUPPORTED = 3, NVML_ERROR_INSUFFICIENT_SIZE = 7,
  NVML_ERROR_DRIVER_NOT_LOADED = 9, NVML_ERROR_TIMEOUT = 10,
  NVML_ERROR_FUNCTION_NOT_FOUND = 13, NVML_ERROR_GPU_IS_LOST = 15, NVML_ERROR_UNKNOWN = 999
};
#define MAX_GPUS 8
#define MAX_SETS 16
#define MAX_QUEUED 256
#define XID_CRITICAL 0x8ULL

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } nvmlMemory_v2_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;

typedef struct fake_gpu {
  char name[96], uuid[96], unsupported[256];
  unsigned int util, mem_util, power_mw, power_limit_mw, temp, slowdown, sm_clock, sm_clock_max;
  unsigned long long mem_total, mem_used, reasons, ecc_uncorrected, ecc_corrected;
  int lost, old_driver;
} fake_gpu;
typedef fake_gpu *nvmlDevice_t;

typedef struct { nvmlDevice_t device; unsigned long long eventType, eventData;
                 unsigned int gpuInstanceId, computeInstanceId; } nvmlEventData_t;
typedef struct fake_set {
  int used; unsigned int registered;  /* bit i: GPU i registered for XIDs */
  int head, tail; nvmlEventData_t queue[MAX_QUEUED];
} fake_set;
typedef fake_set *nvmlEventSet_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static fake_gpu gpus[MAX_GPUS];
static fake_set sets[MAX_SETS];
static int gpu_count = 1, init_error = 0, init_failures = 0, init_failures_seen = -1;
static int initialized = 0, events_seen = 0;
static time_t cfg_mtime = 0;
static off_t cfg_size = -1;
static long cfg_mtime_ns = -1;

static void defaults(void) {
  gpu_count = 1; init_error = 0;
  for (int i = 0; i < MAX_GPUS; i++) {
    fake_gpu *g = &gpus[i];
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "NVIDIA L4");
    snprintf(g->uuid, sizeof g->uuid, "GPU-c0ffee00-0000-0000-0000-00000000000%d", i);
    g->util = 35; g->mem_util = 20;
    g->mem_total = 24ULL << 30; g->mem_used = 6ULL << 30;
    g->power_mw = 38000; g->power_limit_mw = 72000;
    g->temp = 52; g->slowdown = 92; g->sm_clock = 2040; g->sm_clock_max = 2040;
  }
}

static void queue_event(int index, unsigned long long xid) {
  for (int s = 0; s < MAX_SETS; s++) {
    fake_set *set = &sets[s];
    if (!set->used || !(set->registered & (1u << index))) continue;
    if ((set->tail + 1) % MAX_QUEUED == set->head) continue;  /* full: dropped */
    nvmlEventData_t *e = &set->queue[set->tail];
    memset(e, 0, sizeof *e);
    e->device = &gpus[index]; e->eventType = XID_CRITICAL; e->eventData = xid;
    set->tail = (set->tail + 1) % MAX_QUEUED;
  }
}

static void set_gpu(fake_gpu *g, const char *key, const char *value) {
  unsigned long long n = strtoull(value, NULL, 0);
  if (!strcmp(key, "name")) snprintf(g->name, sizeof g->name, "%s", value);
  else if (!strcmp(key, "uuid")) snprintf(g->uuid, sizeof g->uuid, "%s", value);
  else if (!strcmp(key, "unsupported")) snprintf(g->unsupported, sizeof g->unsupported, ",%s,", value);
  else if (!strcmp(key, "util")) g->util = (unsigned)n;
  else if (!strcmp(key, "mem_util")) g->mem_util = (unsigned)n;
  else if (!strcmp(key, "mem_total")) g->mem_total = n;
  else if (!strcmp(key, "mem_used")) g->mem_used = n;
  else if (!strcmp(key, "power_mw")) g->power_mw = (unsigned)n;
  else if (!strcmp(key, "power_limit_mw")) g->power_limit_mw = (unsigned)n;
  else if (!strcmp(key, "temp")) g->temp = (unsigned)n;
  else if (!strcmp(key, "slowdown")) g->slowdown = (unsigned)n;
  else if (!strcmp(key, "sm_clock")) g->sm_clock = (unsigned)n;
  else if (!strcmp(key, "sm_clock_max")) g->sm_clock_max = (unsigned)n;
  else if (!strcmp(key, "reasons")) g->reasons = n;
  else if (!strcmp(key, "ecc_uncorrected")) g->ecc_uncorrected = n;
  else if (!strcmp(key, "ecc_corrected")) g->ecc_corrected = n;
  else if (!strcmp(key, "lost")) g->lost = (int)n;
  else if (!strcmp(key, "old_driver")) g->old_driver = (int)n;
}

/* Re-read the config file when it changed; called with the lock held. */
static void refresh(void) {
  const char *path = getenv("FAKE_NVML_CONFIG");
  struct stat st;
  if (!path || stat(path, &st) != 0) {
    if (cfg_size != -2) { defaults(); cfg_size = -2; }
    return;
  }
  if (st.st_mtime == cfg_mtime && st.st_mtim.tv_nsec == cfg_mtime_ns && st.st_size == cfg_size)
    return;
  FILE *f = fopen(path, "r");
  if (!f) return;
  cfg_mtime = st.st_mtime; cfg_mtime_ns = st.st_mtim.tv_nsec; cfg_size = st.st_size;
  defaults();
  char line[512];
  int events = 0;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = 0;
    char *eq = strchr(line, '=');
    if (line[0] == '#' || !eq) continue;
    *eq = 0;
    const char *key = line, *value = eq + 1;
    if (!strcmp(key, "count")) {
      gpu_count = atoi(value);
      if (gpu_count > MAX_GPUS) gpu_count = MAX_GPUS;
    } else if (!strcmp(key, "init_error")) init_error = atoi(value);
    else if (!strcmp(key, "init_failures")) {
      if (init_failures_seen < 0) { init_failures = atoi(value); init_failures_seen = 1; }
    } else if (!strcmp(key, "event")) {
      if (++events > events_seen) {
        int index = atoi(value);
        const char *colon = strchr(value, ':');
        if (colon && index >= 0 && index < MAX_GPUS) queue_event(index, strtoull(colon + 1, NULL, 0));
        events_seen = events;
      }
    } else if (!strncmp(key, "gpu", 3)) {
      char *dot = strchr(key, '.');
      int index = atoi(key + 3);
      if (dot && index >= 0 && index < MAX_GPUS) set_gpu(&gpus[index], dot + 1, value);
    }
  }
  fclose(f);
}

static int unsupported(const fake_gpu *g, const char *what) {
  char needle[64];
  snprintf(needle, sizeof needle, ",%s,", what);
  return strstr(g->unsupported, needle) != NULL;
}

/* Common entry for per-device calls: lock, refresh, validate; returns NVML_SUCCESS or an error. */
static nvmlReturn_t enter(nvmlDevice_t d, const char *what, void *out) {
  pthread_mutex_lock(&lock);
  refresh();
  if (!initialized) return NVML_ERROR_UNINITIALIZED;
  if (d < gpus || d >= gpus + gpu_count) return NVML_ERROR_INVALID_ARGUMENT;
  if (d->lost) return NVML_ERROR_GPU_IS_LOST;
  if (what && unsupported(d, what)) return NVML_ERROR_NOT_SUPPORTED;
  if (!out) return NVML_ERROR_INVALID_ARGUMENT;
  return NVML_SUCCESS;
}
#define LEAVE(rc) do { nvmlReturn_t _rc = (rc); pthread_mutex_unlock(&lock); return _rc; } while (0)

/* ---- library lifecycle ---------------------------------------------------------------- */

const char *nvmlErrorString(nvmlReturn_t result) {
  switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
  }
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
  (void)flags;
  pthread_mutex_lock(&lock);
  refresh();
  if (init_error) LEAVE(init_error);
  if (init_failures > 0) { init_failures--; LEAVE(NVML_ERROR_DRIVER_NOT_LOADED); }
  initialized++;
  LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void) {
  pthread_mutex_lock(&lock);
  if (!initialized) LEAVE(NVML_ERROR_UNINITIALIZED);
  initialized--;
  LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
  pthread_mutex_lock(&lock);
  refresh();
  if (!initialized) LEAVE(NVML_ERROR_UNINITIALIZED);
  if (!count) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  *count = (unsigned)gpu_count;
  LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
  pthread_mutex_lock(&lock);
  refresh();
  if (!initialized) LEAVE(NVML_ERROR_UNINITIALIZED);
  if (!device || index >= (unsigned)gpu_count) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  if (gpus[index].lost) LEAVE(NVML_ERROR_GPU_IS_LOST);
  *device = &gpus[index];
  LEAVE(NVML_SUCCESS);
}

/* ---- readings ---------------------------------------------------------------------------- */

static nvmlReturn_t copy_string(const char *value, char *out, unsigned int length) {
  if (strlen(value) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
  memcpy(out, value, strlen(value) + 1);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) {
  nvmlReturn_t rc = enter(d, NULL, name);
  if (rc) LEAVE(rc);
  LEAVE(copy_string(d->name, name, length));
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) {
  nvmlReturn_t rc = enter(d, NULL, uuid);
  if (rc) LEAVE(rc);
  LEAVE(copy_string(d->uuid, uuid, length));
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
  nvmlReturn_t rc = enter(d, "utilization", u);
  if (rc) LEAVE(rc);
  u->gpu = d->util; u->memory = d->mem_util;
  LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m) {
  nvmlReturn_t rc = enter(d, "memory", m);
  if (rc) LEAVE(rc);
  m->total = d->mem_total; m->used = d->mem_used; m->free = d->mem_total - d->mem_used;
  LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m) {
  nvmlReturn_t rc = enter(d, "memory", m);
  if (rc) LEAVE(rc);
  m->total = d->mem_total; m->reserved = 0; m->used = d->mem_used;
  m->free = d->mem_total - d->mem_used;
  LEAVE(NVML_SUCCESS);
}

#define UINT_READING(fn, what, field)                                    \
  nvmlReturn_t fn(nvmlDevice_t d, unsigned int *out) {                   \
    nvmlReturn_t rc = enter(d, what, out);                               \
    if (rc) LEAVE(rc);                                                   \
    *out = d->field;                                                     \
    LEAVE(NVML_SUCCESS);                                                 \
  }
UINT_READING(nvmlDeviceGetPowerUsage, "power", power_mw)
UINT_READING(nvmlDeviceGetEnforcedPowerLimit, "power_limit", power_limit_mw)

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *out) {
  nvmlReturn_t rc = enter(d, "temperature", out);
  if (rc) LEAVE(rc);
  if (sensor != 0) LEAVE(NVML_ERROR_INVALID_ARGUMENT);  /* NVML_TEMPERATURE_GPU */
  *out = d->temp;
  LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t d, int threshold, unsigned int *out) {
  nvmlReturn_t rc = enter(d, "threshold", out);
  if (rc) LEAVE(rc);
  if (threshold != 1) LEAVE(NVML_ERROR_NOT_SUPPORTED);  /* NVML_TEMPERATURE_THRESHOLD_SLOWDOWN */
  *out = d->slowdown;
  LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned int *out) {
  nvmlReturn_t rc = enter(d, "clock", out);
  if (rc) LEAVE(rc);
  *out = type == 1 ? d->sm_clock : 1000;  /* NVML_CLOCK_SM */
  LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t d, int type, unsigned int *out) {
  nvmlReturn_t rc = enter(d, "max_clock", out);
  if (rc) LEAVE(rc);
  *out = type == 1 ? d->sm_clock_max : 1000;
  LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t d, unsigned long long *out) {
  nvmlReturn_t rc = enter(d, "reasons", out);
  if (rc) LEAVE(rc);
  if (d->old_driver) LEAVE(NVML_ERROR_FUNCTION_NOT_FOUND);
  *out = d->reasons;
  LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t d, unsigned long long *out) {
  nvmlReturn_t rc = enter(d, "reasons", out);
  if (rc) LEAVE(rc);
  *out = d->reasons;
  LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, int errorType, int counterType,
                                         unsigned long long *out) {
  nvmlReturn_t rc = enter(d, "ecc", out);
  if (rc) LEAVE(rc);
  if (counterType != 0) LEAVE(NVML_ERROR_INVALID_ARGUMENT);  /* NVML_VOLATILE_ECC only */
  *out = errorType == 1 ? d->ecc_uncorrected : d->ecc_corrected;  /* 1 = UNCORRECTED */
  LEAVE(NVML_SUCCESS);
}

/* ---- events ------------------------------------------------------------------------------ */

nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
  pthread_mutex_lock(&lock);
  refresh();
  if (!initialized) LEAVE(NVML_ERROR_UNINITIALIZED);
  if (!set) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  for (int s = 0; s < MAX_SETS; s++) {
    if (!sets[s].used) {
      memset(&sets[s], 0, sizeof sets[s]);
      sets[s].used = 1;
      *set = &sets[s];
      LEAVE(NVML_SUCCESS);
    }
  }
  LEAVE(NVML_ERROR_UNKNOWN);
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long types, nvmlEventSet_t set) {
  nvmlReturn_t rc = enter(d, "events", set);
  if (rc) LEAVE(rc);
  if (set < sets || set >= sets + MAX_SETS || !set->used) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  if (types & XID_CRITICAL) set->registered |= 1u << (unsigned)(d - gpus);
  LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
  (void)timeoutms;  /* never blocks: an empty queue times out at once */
  pthread_mutex_lock(&lock);
  refresh();
  if (!initialized) LEAVE(NVML_ERROR_UNINITIALIZED);
  if (!data || set < sets || set >= sets + MAX_SETS || !set->used)
    LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  if (set->head == set->tail) LEAVE(NVML_ERROR_TIMEOUT);
  *data = set->queue[set->head];
  set->head = (set->head + 1) % MAX_QUEUED;
  LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
  pthread_mutex_lock(&lock);
  if (set < sets || set >= sets + MAX_SETS || !set->used) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  set->used = 0;
  LEAVE(NVML_SUCCESS);
}
