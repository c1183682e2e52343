/* What switchyard_edge.c (the request side, the hooks) and response.c (the response side)
 * share: the filter config and per-stream state, the headers and route metadata they read,
 * and small header helpers. */
#pragma once

#include <stddef.h>
#include <string.h>
#include <time.h>

#include "abi.h"

#define EXPORT __attribute__((visibility("default")))
#define LIT(s) ((module_buffer){(s), sizeof(s) - 1})
#define BUF(p, n) ((module_buffer){(p), (n)})

#define MODEL_HEADER "x-switchyard-model"
#define VARIANT_HEADER "x-switchyard-variant"
#define SLO_HEADER "x-switchyard-slo-ms"
#define PATH_HEADER "x-switchyard-path"
#define NAMED_HEADER "x-switchyard-named"
#define LISTENER_NS "switchyard.model_name"
#define ONE_VARIANT_KEY "one_variant" /* route metadata: every deployment it reaches, one variant */
#define CALL_NS "switchyard" /* dynamic metadata: a ModelInfer's own slo_ms, for the access log */
#define HOST_NS "switchyard" /* a deployment endpoint's metadata: deployment, region, variant */
#define COST_NS "switchyard.cost"
#define FEASIBLE_NS "switchyard.feasible"
#define SERVICE "/inference.GRPCInferenceService/"
#define REQUEST_ID_BYTES 128 /* of x-request-id echoed: services/edge/hints.py REQUEST_ID_CHARS */

typedef struct {
  int rewrite; /* 0: listener, 1: upstream variant rewrite */
  double margin_ms;
  int slow_path;
  int tenants; /* which ModelInfer calls the slow path's tenant gate admits: 0 off, */
               /* 1 those carrying authorization or x-tenant, 2 all */
  long long max_message_bytes;  /* a named RPC's message over it: RESOURCE_EXHAUSTED; -1 none */
  long long max_metadata_bytes; /* [security.limits] on the caller's metadata; -1: none */
  long long max_metadata_count;
  char* tenant_sans; /* each a client_san naming a tenant, NUL-terminated, one after another */
  size_t n_tenant_sans;
} config;

typedef struct {
  const config* cfg;
  int waiting_body; /* 1: the request body is buffered for the walk or the rewrite */
  int is_infer;
  int has_slo;
  double slo_ms;
  double t0_ms;
  double deadline_at_ms; /* now_ms() when the caller's deadline ends; 0: none */
  int faulted;  /* a call or stream's first refused hint (sy_first_fault): refused */
  char* fault;  /* its message (malloc'd; NULL without memory) */
  char variant[256]; /* rewrite: the variant to append */
} filter;

static inline double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static inline int get_header(envoy_filter f, enum header_type t, const char* key, envoy_buffer* out) {
  out->ptr = NULL;
  out->length = 0;
  return envoy_dynamic_module_callback_http_get_header(f, t, BUF(key, strlen(key)), out, 0,
                                                       NULL) &&
         out->ptr != NULL;
}

static inline void set_header(envoy_filter f, enum header_type t, const char* key, const char* v,
                       size_t n) {
  envoy_dynamic_module_callback_http_set_header(f, t, BUF(key, strlen(key)), BUF(v, n));
}

static inline int eq(envoy_buffer b, const char* s) {
  size_t n = strlen(s);
  return b.length == n && memcmp(b.ptr, s, n) == 0;
}
