/* The listener filter's response side (switchyard_edge.c has the request side): the path a
 * trailers-only answer took, a backend's status as the caller gets it from the Python edge
 * (rules.h: sy_backend_status), and on a fast-path ModelInfer answered OK its cost and whether
 * it met its SLO as trailers (route metadata: switchyard.cost/<dep> string,
 * switchyard.feasible/<dep> bool, switchyard.model_name/slo_ms number). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"
#include "rules.h"

/* A backend's status and message (the response's headers or trailers) as the caller gets
 * them from the Python edge (rules.h: sy_backend_status). */
static void backend_status(envoy_filter f, enum header_type t, envoy_buffer status) {
  int code = status.length == 1 ? status.ptr[0] - '0' : status.length == 2 && status.ptr[0] ==
             '1' ? 10 + status.ptr[1] - '0' : -1;
  envoy_buffer message = {0};
  get_header(f, t, "grpc-message", &message);
  char* said = NULL;
  int to = sy_backend_status(code, message, &said); /* reads message before it changes */
  if (to == 0) return;
  char s[4];
  snprintf(s, sizeof s, "%d", to);
  set_header(f, t, "grpc-status", s, strlen(s));
  set_header(f, t, "grpc-message", said, strlen(said));
  free(said);
}

EXPORT int envoy_dynamic_module_on_http_filter_response_headers(envoy_filter f, filter* s,
                                                                bool end_of_stream) {
  (void)end_of_stream;
  if (s->cfg->rewrite) return HEADERS_CONTINUE;
  envoy_buffer path = {0}, status;
  if (envoy_dynamic_module_callback_http_get_metadata_string(f, MD_ROUTE, LIT(LISTENER_NS),
                                                             LIT("path"), &path) &&
      path.ptr != NULL && get_header(f, RESPONSE_HEADER, "grpc-status", &status)) {
    backend_status(f, RESPONSE_HEADER, status); /* a trailers-only answer: an error */
    char p[32];
    size_t n = path.length < sizeof p ? path.length : sizeof p;
    memcpy(p, path.ptr, n);
    set_header(f, RESPONSE_HEADER, PATH_HEADER, p, n);
  }
  return HEADERS_CONTINUE;
}

EXPORT int envoy_dynamic_module_on_http_filter_response_body(envoy_filter f, filter* s,
                                                             bool end_of_stream) {
  (void)f, (void)s, (void)end_of_stream;
  return BODY_CONTINUE;
}

/* The Python edge's trailers for the attempt that answered, when a deployment answered (its
 * endpoint carries switchyard.deployment: not the slow path, not Envoy's own reply):
 * x-served-by, x-served-region, x-attempts, x-request-id and the path, from the answering
 * host's metadata and the stream's attempt count (%UPSTREAM_REQUEST_ATTEMPT_COUNT%). On a node that loads the module
 * placement pushes its aggregates without the upstream header_mutation that added them
 * (services/xds/native.py: an upstream filter chain per attempt cost 0.06-0.30 of the
 * listener's CPU per call). The deployment is copied into dep (size n): 0 when none. */
static size_t served_trailers(envoy_filter f, char* dep, size_t n) {
  envoy_buffer d = {0}, region = {0}, rid = {0};
  if (!envoy_dynamic_module_callback_http_get_metadata_string(f, MD_HOST, LIT(HOST_NS),
                                                              LIT("deployment"), &d) ||
      d.ptr == NULL || d.length == 0 || d.length >= n)
    return 0;
  memcpy(dep, d.ptr, d.length);
  dep[d.length] = 0;
  size_t dn = d.length;
  set_header(f, RESPONSE_TRAILER, "x-served-by", dep, dn);
  if (envoy_dynamic_module_callback_http_get_metadata_string(f, MD_HOST, LIT(HOST_NS),
                                                             LIT("region"), &region) &&
      region.ptr != NULL) {
    char r[256];
    size_t rn = region.length < sizeof r ? region.length : sizeof r;
    memcpy(r, region.ptr, rn);
    set_header(f, RESPONSE_TRAILER, "x-served-region", r, rn);
  }
  char a[24];
  uint64_t tried = 0;
  envoy_dynamic_module_callback_http_filter_get_attribute_int(
      f, ATTR_UPSTREAM_REQUEST_ATTEMPT_COUNT, &tried);
  snprintf(a, sizeof a, "%llu", (unsigned long long)(tried > 0 ? tried : 1));
  set_header(f, RESPONSE_TRAILER, "x-attempts", a, strlen(a));
  if (get_header(f, REQUEST_HEADER, "x-request-id", &rid)) {
    char id[REQUEST_ID_BYTES];
    size_t in = rid.length < sizeof id ? rid.length : sizeof id;
    memcpy(id, rid.ptr, in);
    set_header(f, RESPONSE_TRAILER, "x-request-id", id, in);
  }
  set_header(f, RESPONSE_TRAILER, PATH_HEADER, "envoy", 5);
  return dn;
}

/* Every answer's served trailers; a fast-path ModelInfer answered OK also gets its cost and
 * whether it met its SLO. */
EXPORT int envoy_dynamic_module_on_http_filter_response_trailers(envoy_filter f, filter* s) {
  if (s->cfg->rewrite) return TRAILERS_CONTINUE;
  char dep[512];
  size_t dn = served_trailers(f, dep, sizeof dep);
  if (!s->is_infer || s->t0_ms == 0) return TRAILERS_CONTINUE;
  envoy_buffer st;
  if (!get_header(f, RESPONSE_TRAILER, "grpc-status", &st)) return TRAILERS_CONTINUE;
  if (!eq(st, "0")) {
    backend_status(f, RESPONSE_TRAILER, st);
    return TRAILERS_CONTINUE;
  }
  if (dn == 0) return TRAILERS_CONTINUE;
  module_buffer key = BUF(dep, dn);
  envoy_buffer cost = {0};
  if (!envoy_dynamic_module_callback_http_get_metadata_string(f, MD_ROUTE, LIT(COST_NS), key,
                                                              &cost) ||
      cost.ptr == NULL)
    return TRAILERS_CONTINUE;
  char cost_copy[64];
  size_t cn = cost.length < sizeof cost_copy ? cost.length : sizeof cost_copy;
  memcpy(cost_copy, cost.ptr, cn);
  double slo = s->slo_ms;
  int has_slo = s->has_slo ||
                envoy_dynamic_module_callback_http_get_metadata_number(
                    f, MD_ROUTE, LIT(LISTENER_NS), LIT("slo_ms"), &slo);
  bool feasible = false;
  envoy_dynamic_module_callback_http_get_metadata_bool(f, MD_ROUTE, LIT(FEASIBLE_NS), key,
                                                       &feasible);
  int met = feasible && has_slo && now_ms() - s->t0_ms <= slo;
  envoy_dynamic_module_callback_http_add_header(f, RESPONSE_TRAILER, LIT("x-cost-usd"),
                                                BUF(cost_copy, cn));
  envoy_dynamic_module_callback_http_add_header(f, RESPONSE_TRAILER, LIT("x-slo-met"),
                                                met ? LIT("true") : LIT("false"));
  return TRAILERS_CONTINUE;
}
