/* Switchyard's Envoy edge filters as one Envoy dynamic module (C ABI, no SDK): the twin of
 * the Lua that services/xds/lua.py and services/xds/rewrite.py push, measured against it by
 * `python -m benchmarks.envoy_filters` (variants dm-peek, sy-dm).
 *
 * Two filters, chosen by `filter_name`:
 *
 * "listener" (on the listener; filter_config "margin=<ms>;slow=<0|1>;tenants=<off|credential|
 *   all>" and optionally ";max_message_bytes=<n>;max_metadata_bytes=<n>;max_metadata_count=
 *   <n>"): [security.limits] on the metadata, then a call or stream with at most 2 ms of its
 *   deadline left refused; its first refused hint in the caller's order (rules.h's
 *   sy_first_fault: x-slo-ms read as services/edge/hints.py reads it, a repeated x-tenant
 *   that disagrees, a hint sent as a -bin header; in hints.py's words) refused, a ModelInfer's
 *   once its size and bytes pass, as on the Python edge; caller's own x-switchyard-* headers
 *   removed; slow-path RPCs, hints and (per tenants) tenants' calls marked x-switchyard-path:
 *   slow (or, without a slow path, refused UNIMPLEMENTED, or INVALID_ARGUMENT for a refused
 *   hint); x-slo-ms or the deadline minus the margin in x-switchyard-slo-ms (whole ms, rounded
 *   down); the buffered request's top-level fields walked for the last field 1 ->
 *   x-switchyard-model, route cache cleared; the route's
 *   first variant (route metadata switchyard.model_name/first_variant) appended as field 1
 *   once, x-switchyard-named says so. The response side is response.c: the path of a
 *   trailers-only answer, a backend's status as the Python edge gives it, and x-cost-usd /
 *   x-slo-met on an OK ModelInfer.
 * "rewrite" (upstream, per attempt): appends x-switchyard-variant as field 1 only when it
 *   differs from what the body already names last.
 *
 * Bytes the walk cannot read (a name not UTF-8, a message over max_message_bytes) get a
 * trailers-only gRPC answer with the Lua's statuses and messages; a compressed message goes to
 * the slow path; a name with a NUL, CR or LF sets no header (the unknown-model route).
 * tests/unit/test_envoy_dynmod_parity.py holds it to the Python edge on
 * tests/integration/test_hostile_engines.py's cases. On the way back, a variant gone from
 * every deployment is UNAVAILABLE with the Python edge's hint and a backend's INTERNAL for
 * unparseable bytes INVALID_ARGUMENT (sy_backend_status). A tenant's call is one carrying
 * authorization, x-tenant (either also as -bin) or a client certificate naming one of
 * filter_config's tenant_san (hex). Built by native/build.sh (gcc -O2 -shared -fPIC). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edge.h"
#include "rules.h"

static const char* const SLOW_RPCS[] = {"ModelStreamInfer", "RepositoryIndex",
                                        "ModelStatistics", "ServerMetadata", NULL};
static const char* const CONTROL_RPCS[] = {"ModelReady", "ModelMetadata", "ModelConfig",
                                           "ServerLive", "ServerReady", NULL};
/* the probes a caller without a credential may call where tenants are required
 * (services/security/tenants.py OPEN_RPCS; lua.py builds its twin from it) */
static const char* const OPEN_RPCS[] = {"ServerLive", "ServerReady", NULL};
static const char* const NAMED_RPCS[] = {"ModelInfer", "ModelReady", "ModelMetadata",
                                         "ModelConfig", NULL};
/* RPCs that start attempts at a backend (lua.py's DEADLINE_CHECKED_RPCS) */
static const char* const DEADLINE_CHECKED[] = {"ModelInfer", "ModelStreamInfer", NULL};
/* ------------------------------------------------------------------------ helpers */

static void remove_header(envoy_filter f, const char* key) {
  envoy_dynamic_module_callback_http_set_header(f, REQUEST_HEADER, BUF(key, strlen(key)),
                                                BUF(NULL, 0));
}

/* Is path SERVICE + one of names? */
static int rpc_in(envoy_buffer path, const char* const* names) {
  size_t k = sizeof(SERVICE) - 1;
  if (path.length <= k || memcmp(path.ptr, SERVICE, k) != 0) return 0;
  for (; *names; names++) {
    size_t n = strlen(*names);
    if (path.length - k == n && memcmp(path.ptr + k, *names, n) == 0) return 1;
  }
  return 0;
}

/* A trailers-only gRPC answer: the caller gets this status, never UNKNOWN, and its
 * x-request-id (Envoy's, when the caller sent none; its first REQUEST_ID_BYTES), as every edge
 * answer does. */
static void reply(envoy_filter f, int code, const char* message) {
  char status[4];
  snprintf(status, sizeof status, "%d", code);
  envoy_buffer rid = {0};
  size_t n = 0;
  envoy_dynamic_module_callback_http_get_header(f, REQUEST_HEADER, LIT("x-request-id"), &rid,
                                                0, &n);
  module_http_header h[5] = {
      {":status", 7, "200", 3},
      {"content-type", 12, "application/grpc", 16},
      {"grpc-status", 11, status, strlen(status)},
      {"grpc-message", 12, message, strlen(message)},
      {"x-request-id", 12, n && rid.ptr ? rid.ptr : "",
       n && rid.ptr ? (rid.length < REQUEST_ID_BYTES ? rid.length : REQUEST_ID_BYTES) : 0},
  };
  envoy_dynamic_module_callback_http_send_response_headers(f, h, 5, true);
}

/* ------------------------------------------------------------------ the request */

/* INVALID_ARGUMENT for a hint, in InvalidHint's words (rules.h: sy_hint_message). */
static void refuse_hint(envoy_filter f, const char* key, envoy_buffer value, const char* why,
                        const envoy_buffer* arg) {
  char* msg = sy_hint_message(key, value, why, arg);
  reply(f, 3, msg ? msg : "metadata: a bad hint");
  free(msg);
}

/* A call or stream's first refused hint (sy_first_fault), kept until it is answered. */
static void refuse_fault(envoy_filter f, filter* s) {
  reply(f, 3, s->fault ? s->fault : "metadata: a bad hint");
}

/* At most this much of the caller's deadline left: nothing is forwarded (lua.py's rule,
 * placement.attempts.MIN_REMAINING_S; gRPC sends the deadline in whole ms, rounded up). */
#define MIN_REMAINING_MS 2.0

static void too_late(envoy_filter f, double left_ms) {
  char msg[256];
  snprintf(msg, sizeof msg,
           "%.1f ms of the caller's deadline left (at most: gRPC sends it in whole ms), not "
           "more than the %g ms an attempt needs to start (placement.attempts."
           "MIN_REMAINING_S): nothing was forwarded",
           left_ms, MIN_REMAINING_MS);
  reply(f, 4, msg);
}

/* What listener_headers reads of the caller's headers, from its one walk of the header map
 * (every other question would be one more host callback, each a lookup in Envoy's map). The
 * pointers are into Envoy's header map: valid until the hook returns, and entries other than
 * the ones removed stay where they are. */
enum { OWN_MODEL = 1, OWN_NAMED = 2, OWN_VARIANT = 4, OWN_SLO = 8, OWN_PATH = 16 };
typedef struct {
  envoy_buffer path, timeout, cert; /* the first of each, the last timeout (ptr NULL: none) */
  int deadline;     /* the timeout as read once (sy_grpc_timeout): 1 read, 0 none, -1 unreadable */
  double deadline_ms; /* when deadline is 1: the caller's budget in ms */
  int own;          /* the x-switchyard-* headers the caller sent (OWN_*), removed */
  int tenant;       /* authorization, x-tenant or either as -bin */
  int slow_hint;    /* 1 + the first of SY_SLOW_HINTS (in its order) sent; 0: none */
  int rules;        /* SY_READ_* of any entry: which rules.h checks have anything to read */
} seen;

static int key_eq(const envoy_http_header* e, const char* s, size_t n) {
  return e->key_length == n && memcmp(e->key_ptr, s, n) == 0;
}
#define KEY_IS(e, lit) key_eq((e), (lit), sizeof(lit) - 1)

static void see(const envoy_http_header* h, size_t n, seen* out) {
  memset(out, 0, sizeof *out);
  int slow = 0;
  for (size_t i = 0; i < n; i++) {
    const envoy_http_header* e = &h[i];
    out->rules |= sy_reads(e);
    if (e->key_length == 0) continue;
    envoy_buffer v = {e->value_ptr ? e->value_ptr : "", e->value_length};
    if (e->key_ptr[0] == ':') {
      if (out->path.ptr == NULL && KEY_IS(e, ":path")) out->path = v;
    } else if (e->key_length > 12 && memcmp(e->key_ptr, "x-switchyard-", 13) == 0) {
      out->own |= KEY_IS(e, MODEL_HEADER) ? OWN_MODEL : KEY_IS(e, NAMED_HEADER) ? OWN_NAMED
                  : KEY_IS(e, VARIANT_HEADER) ? OWN_VARIANT : KEY_IS(e, SLO_HEADER) ? OWN_SLO
                  : KEY_IS(e, PATH_HEADER) ? OWN_PATH : 0;
    } else if (KEY_IS(e, "grpc-timeout")) {
      out->timeout = v; /* the last one sent, as gRPC's core reads a repeat */
    } else if (KEY_IS(e, "authorization") || KEY_IS(e, "x-tenant") ||
               KEY_IS(e, "authorization-bin") || KEY_IS(e, "x-tenant-bin")) {
      out->tenant = 1;
    } else if (KEY_IS(e, "x-forwarded-client-cert")) {
      if (out->cert.ptr == NULL) out->cert = v;
    } else {
      int k = 0;
      for (; SY_SLOW_HINTS[k]; k++)
        if (key_eq(e, SY_SLOW_HINTS[k], strlen(SY_SLOW_HINTS[k]))) break;
      if (SY_SLOW_HINTS[k] && (slow == 0 || k + 1 < slow)) slow = k + 1;
    }
  }
  out->slow_hint = slow;
}

/* 1: *slo set; 0: none (the model's default); -1: a bad x-slo-ms, answered when `answer`
 * (a ModelInfer's is its fault, answered after its bytes). Read as hints.py reads it, value
 * by value in the caller's order (h: every header entry): each a plain decimal within
 * SLO_RANGE, each repeat equal to the first as a number ("50" then "50.0" agree). */
static int slo_ms(envoy_filter f, const config* c, const seen* w, const envoy_http_header* h,
                  size_t n, double* slo, int answer) {
  envoy_buffer first = {0};
  double first_v = 0;
  int any = 0;
  for (size_t i = 0; (w->rules & SY_READ_HINT) && i < n; i++) {
    if (!KEY_IS(&h[i], "x-slo-ms")) continue;
    envoy_buffer value = {h[i].value_ptr ? h[i].value_ptr : "", h[i].value_length};
    double v = 0;
    char why[96];
    const char* bad = sy_hint_number(value, SLO_LO, SLO_HI, &v, why, sizeof why);
    if (bad != NULL) {
      if (answer) refuse_hint(f, "x-slo-ms", value, bad, NULL);
      return -1;
    }
    if (!any) {
      first_v = v;
      first = value;
      any = 1;
    } else if (v != first_v) {
      if (answer) refuse_hint(f, "x-slo-ms", value, CONTRADICTS("x-slo-ms"), &first);
      return -1;
    }
  }
  if (any) {
    *slo = first_v;
    return 1;
  }
  if (w->deadline > 0) {
    double v = w->deadline_ms - c->margin_ms;
    *slo = v < 1 ? 1 : v;
    return 1;
  }
  return 0;
}

/* Every entry of the request's header map, in Envoy's order (*n of them; free the array). */
static envoy_http_header* all_headers(envoy_filter f, size_t* n) {
  *n = envoy_dynamic_module_callback_http_get_headers_size(f, REQUEST_HEADER);
  envoy_http_header* h = *n ? calloc(*n, sizeof *h) : NULL;
  if (h == NULL || !envoy_dynamic_module_callback_http_get_headers(f, REQUEST_HEADER, h)) {
    free(h);
    *n = 0;
    return NULL;
  }
  return h;
}

/* A caller's certificate, as Envoy forwards it (x-forwarded-client-cert), that may name a
 * tenant: any tenant's client_san anywhere in the header (lua_checks.py's cert_tenant: a superset of
 * the calls the slow path identifies as that tenant; a false match only costs the slow path). */
static int cert_tenant(envoy_buffer cert, const config* c) {
  if (c->n_tenant_sans == 0 || cert.ptr == NULL) return 0;
  const char* san = c->tenant_sans;
  for (size_t i = 0; i < c->n_tenant_sans; i++, san += strlen(san) + 1) {
    size_t k = strlen(san);
    for (size_t at = 0; k && at + k <= cert.length; at++)
      if (memcmp(cert.ptr + at, san, k) == 0) return 1;
  }
  return 0;
}

/* [security.limits] on the metadata (checked: a call or stream, DEADLINE_CHECKED), answered
 * (rules.h). 1: refused. */
static int headers_refused(envoy_filter f, const config* c, int checked,
                           const envoy_http_header* h, size_t n) {
  char msg[256];
  int code = sy_metadata_refusal(h, n, c->max_metadata_bytes, c->max_metadata_count, checked,
                                 msg, sizeof msg);
  if (code != 0) reply(f, code, msg);
  return code != 0;
}

static void to_slow(envoy_filter f, const config* c, const char* why, size_t why_len) {
  if (c->slow_path) {
    set_header(f, REQUEST_HEADER, PATH_HEADER, "slow", 4);
    envoy_dynamic_module_callback_http_clear_route_cache(f);
  } else {
    char msg[512];
    snprintf(msg, sizeof msg,
             "%.*s needs the slow path, which this Envoy edge does not have; call a Python "
             "edge for it",
             (int)why_len, why);
    reply(f, 12, msg);
  }
}

/* The whole request body (buffered, then the chunk just received), contiguous. Returns a
 * pointer into Envoy's one chunk when there is just one, else into *owned (malloc'd). */
static const char* whole_body(envoy_filter f, size_t* len, char** owned) {
  enum body_type kinds[2] = {BUFFERED_REQUEST_BODY, RECEIVED_REQUEST_BODY};
  int nkinds = envoy_dynamic_module_callback_http_received_buffered_request_body(f) ? 1 : 2;
  envoy_buffer stack[8];
  envoy_buffer* chunks[2] = {NULL, NULL};
  size_t counts[2] = {0, 0}, total = 0, nchunks = 0;
  const char* only = NULL;
  for (int k = 0; k < nkinds; k++) {
    size_t n = envoy_dynamic_module_callback_http_get_body_chunks_size(f, kinds[k]);
    if (n == 0) continue;
    envoy_buffer* v = (n <= 4) ? stack + 4 * k : malloc(n * sizeof *v);
    if (!envoy_dynamic_module_callback_http_get_body_chunks(f, kinds[k], v)) {
      if (v != stack + 4 * k) free(v);
      continue;
    }
    chunks[k] = v;
    counts[k] = n;
    for (size_t i = 0; i < n; i++) {
      if (v[i].length == 0) continue;
      total += v[i].length;
      nchunks++;
      only = v[i].ptr;
    }
  }
  *owned = NULL;
  *len = total;
  if (nchunks > 1) {
    char* out = malloc(total);
    size_t at = 0;
    for (int k = 0; k < 2; k++)
      for (size_t i = 0; i < counts[k]; i++) {
        memcpy(out + at, chunks[k][i].ptr, chunks[k][i].length);
        at += chunks[k][i].length;
      }
    *owned = out;
    only = out;
  }
  for (int k = 0; k < 2; k++)
    if (chunks[k] && chunks[k] != stack + 4 * k) free(chunks[k]);
  return total ? only : NULL;
}

/* Replace the request body with its first gRPC message plus field 1 = name (the parser keeps
 * the last value), the frame length fixed; any later message dropped. */
static int append_name(envoy_filter f, const char* body, size_t n, const char* name,
                       size_t name_len) {
  if (n < 5 || body[0] != 0 || name_len >= 1u << 14) return 0;
  /* the first message only, as gRPC reads a unary call's (a second one's prefix would end up
   * inside it: Triton could not parse the call) */
  const unsigned char* u = (const unsigned char*)body;
  size_t first = 5 + (((size_t)u[1] << 24) | ((size_t)u[2] << 16) | ((size_t)u[3] << 8) | u[4]);
  if (first < n) n = first;
  unsigned char field[4 + 16384];
  size_t k = 0;
  field[k++] = 0x0a;
  size_t l = name_len;
  while (l >= 0x80) {
    field[k++] = (unsigned char)(l | 0x80);
    l >>= 7;
  }
  field[k++] = (unsigned char)l;
  memcpy(field + k, name, name_len);
  k += name_len;
  size_t len = n - 5 + k;
  char* out = malloc(n + k);
  out[0] = 0;
  out[1] = (char)(len >> 24);
  out[2] = (char)(len >> 16);
  out[3] = (char)(len >> 8);
  out[4] = (char)len;
  memcpy(out + 5, body + 5, n - 5);
  memcpy(out + n, field, k);
  envoy_dynamic_module_callback_http_drain_body(f, BUFFERED_REQUEST_BODY, (size_t)-1);
  envoy_dynamic_module_callback_http_drain_body(f, RECEIVED_REQUEST_BODY, (size_t)-1);
  int ok = envoy_dynamic_module_callback_http_append_body(f, RECEIVED_REQUEST_BODY,
                                                          BUF(out, n + k));
  free(out);
  return ok;
}

/* ------------------------------------------------------------------- listener */

/* The request headers' checks and marks, in lua.py's order: the metadata limits, the wire
 * refusals, then (a call or stream) the deadline and its first refused hint: a -bin one
 * answered here (unless a hint only the slow path reads came first and there is one: it
 * answers), a ModelInfer's after its bytes (listener_body_done), as the Python edge checks
 * them before its hints; then x-switchyard-* headers removed. h: every header entry, walked
 * once (see); a rule of rules.h walks them again only when an entry is one it reads. */
static int listener_checks(envoy_filter f, filter* s, bool end_of_stream,
                           const envoy_http_header* h, size_t nh) {
  const config* c = s->cfg;
  seen w;
  char canon[24];
  see(h, nh, &w);
  w.deadline = sy_grpc_timeout(w.timeout, &w.deadline_ms);
  envoy_buffer path = w.path;
  int checked = path.ptr != NULL && rpc_in(path, DEADLINE_CHECKED);
  s->deadline_at_ms = 0;
  int refused = 0, binary = 0, unread = 0;
  /* gRPC's core's order (sy_wire_refusal): what its parse refuses, then no te, then the
   * limits (the Python edge's gate), then what only a backend would refuse */
  int wire = (w.rules & SY_READ_WIRE) ||
             (nh > 0 && (w.rules & (SY_READ_TYPED | SY_READ_TE)) != (SY_READ_TYPED | SY_READ_TE));
  char msg[512];
  int code = wire ? sy_wire_refusal(h, nh, 0, msg, sizeof msg) : 0;
  if (code == 0 && w.deadline < 0) {
    /* gRPC's own words: the Python edge's (and a backend's) server refuses it so; served
     * here, the caller's deadline would be dropped (the route removes grpc-timeout) */
    code = 13;
    snprintf(msg, sizeof msg, "%s", SY_TIMEOUT_UNREADABLE);
  }
  if (code != 0) {
    reply(f, code, msg);
    refused = 1;
  }
  if (!refused) refused = headers_refused(f, c, checked, h, nh);
  if (!refused && wire && (code = sy_wire_refusal(h, nh, 1, msg, sizeof msg)) != 0) {
    reply(f, code, msg);
    refused = 1;
  }
  if (!refused && w.timeout.ptr != NULL) {
    /* what Envoy's router (max_stream_duration), the slow path's gRPC and its deadline
     * header read: gRPC's reading in at most 8 digits, or none */
    int k = w.deadline > 0 ? sy_timeout_for_envoy(w.deadline_ms, canon, sizeof canon) : 0;
    if (w.deadline == 0) {
      remove_header(f, "grpc-timeout");
      w.timeout.ptr = NULL;
    } else if (k > 0 && (w.timeout.length != (size_t)k ||
                         memcmp(w.timeout.ptr, canon, (size_t)k) != 0)) {
      int plain = 1;
      for (size_t i = 0; i < w.timeout.length; i++)
        if (w.timeout.ptr[i] == ',' || w.timeout.ptr[i] == ' ') plain = 0;
      if (!plain || w.timeout.length > 9) {
        set_header(f, REQUEST_HEADER, "grpc-timeout", canon, (size_t)k);
        w.timeout.ptr = canon;
        w.timeout.length = (size_t)k;
        w.deadline = sy_grpc_timeout(w.timeout, &w.deadline_ms); /* what Envoy now reads */
      }
    }
  }
  if (!refused && checked && w.deadline > 0) {
    if (w.deadline_ms <= MIN_REMAINING_MS) {
      too_late(f, w.deadline_ms);
      refused = 1;
    }
    s->deadline_at_ms = now_ms() + w.deadline_ms;
  }
  s->faulted = !refused && checked && (w.rules & SY_READ_HINT) &&
               sy_first_fault(h, nh, &s->fault, &binary, &unread);
  if (s->faulted && binary && !eq(path, SERVICE "ModelInfer") && !(unread && c->slow_path)) {
    refuse_fault(f, s);
    refused = 1;
  }
  if (refused) return HEADERS_STOP_ITERATION;
  /* only those the caller sent: each removal is a lookup in Envoy's map */
  if (w.own & OWN_MODEL) remove_header(f, MODEL_HEADER);
  if (w.own & OWN_NAMED) remove_header(f, NAMED_HEADER);
  if (w.own & OWN_VARIANT) remove_header(f, VARIANT_HEADER);
  if (w.own & OWN_SLO) remove_header(f, SLO_HEADER);
  if (w.own & OWN_PATH) remove_header(f, PATH_HEADER);
  if (path.ptr == NULL) return HEADERS_CONTINUE;
  /* with require_tenant a control RPC but the probes is the slow path's (its tenant gate):
   * without one it is refused, never answered by a deployment to a caller with no
   * credential */
  if (rpc_in(path, SLOW_RPCS) ||
      (rpc_in(path, CONTROL_RPCS) &&
       (c->slow_path || (c->tenants == 2 && !rpc_in(path, OPEN_RPCS))))) {
    to_slow(f, c, path.ptr, path.length);
    return c->slow_path ? HEADERS_CONTINUE : HEADERS_STOP_ITERATION;
  }
  if (!rpc_in(path, NAMED_RPCS)) return HEADERS_CONTINUE;
  s->is_infer = eq(path, SERVICE "ModelInfer");
  if (s->is_infer) {
    char why[64] = "";
    /* authorization, x-tenant, either as -bin (the slow path refuses it, never no tenant) */
    if (c->tenants == 2 || (c->tenants == 1 && (w.tenant || cert_tenant(w.cert, c))))
      snprintf(why, sizeof why, "a tenant's call"); /* the Python edge admits tenants */
    if (!why[0] && w.slow_hint)
      snprintf(why, sizeof why, "hint %s", SY_SLOW_HINTS[w.slow_hint - 1]);
    if (why[0] && s->faulted && !c->slow_path) { /* without a slow path, Python's refusal */
      refuse_fault(f, s);
      return HEADERS_STOP_ITERATION;
    }
    if (why[0]) {
      to_slow(f, c, why, strlen(why));
      return c->slow_path ? HEADERS_CONTINUE : HEADERS_STOP_ITERATION;
    }
  }
  int got = slo_ms(f, c, &w, h, nh, &s->slo_ms, !s->is_infer);
  if (got < 0 && !s->is_infer) return HEADERS_STOP_ITERATION;
  s->has_slo = got > 0;
  if (s->has_slo) {
    char v[32];
    int n = snprintf(v, sizeof v, "%lld", (long long)floor(s->slo_ms));
    set_header(f, REQUEST_HEADER, SLO_HEADER, v, (size_t)n);
  }
  if (end_of_stream) {
    reply(f, 3, NOT_PARSED " (no body)");
    return HEADERS_STOP_ITERATION;
  }
  s->waiting_body = 1;
  return HEADERS_STOP_ITERATION;
}

static int listener_headers(envoy_filter f, filter* s, bool end_of_stream) {
  size_t nh = 0;
  envoy_http_header* all = all_headers(f, &nh); /* every call: the wire refusals read them */
  int status = listener_checks(f, s, end_of_stream, all, nh);
  free(all);
  return status;
}

static void listener_body_done(envoy_filter f, filter* s) {
  s->waiting_body = 0;
  size_t n;
  char* owned;
  const char* body = whole_body(f, &n, &owned);
  const char* name;
  size_t name_len;
  int code;
  char msg[256];
  if (body == NULL) {
    reply(f, 3, NOT_PARSED " (no body)");
    return;
  }
  if (!sy_model_name((const unsigned char*)body, n, s->cfg->max_message_bytes, &name,
                     &name_len, &code, msg, sizeof msg)) {
    free(owned);
    if (code == COMPRESSED && s->cfg->slow_path) {
      /* the Python edge decompresses it and routes it by every rule (sent on as it came) */
      to_slow(f, s->cfg, "a compressed request", 20);
      return;
    }
    reply(f, code == COMPRESSED ? 12 : code, msg);
    return;
  }
  if (s->faulted) { /* its bytes read, its first refused hint answers (listener_headers) */
    free(owned);
    refuse_fault(f, s);
    return;
  }
  if (memchr(name, 0, name_len) || memchr(name, '\r', name_len) || memchr(name, '\n', name_len)) {
    /* a name no header can carry (Envoy would cut it there: "summarize\0x" routed as
     * summarize) names no model: no header, so the unknown-model route answers NOT_FOUND,
     * as a Python edge does */
    free(owned);
    envoy_dynamic_module_callback_http_clear_route_cache(f);
    return;
  }
  if (s->is_infer && s->deadline_at_ms > 0) {
    double left = s->deadline_at_ms - now_ms();
    if (left <= MIN_REMAINING_MS) {
      free(owned);
      too_late(f, left);
      return;
    }
  }
  set_header(f, REQUEST_HEADER, MODEL_HEADER, name, name_len);
  envoy_dynamic_module_callback_http_clear_route_cache(f);
  /* Resolve the route for the name now (as the Lua's handle:metadata() does): route metadata
   * is read from the route last resolved, the one matched before the name was known. */
  envoy_buffer cluster = {0};
  envoy_dynamic_module_callback_http_get_cluster_name(f, &cluster);
  envoy_buffer first = {0};
  if (envoy_dynamic_module_callback_http_get_metadata_string(
          f, MD_ROUTE, LIT(LISTENER_NS), LIT("first_variant"), &first) &&
      first.ptr != NULL && first.length > 0 &&
      !(first.length == name_len && memcmp(first.ptr, name, name_len) == 0)) {
    char variant[1025];
    size_t vn = first.length < 1024 ? first.length : 1024;
    memcpy(variant, first.ptr, vn); /* first lives in Envoy: copy before the body changes */
    bool only = false; /* every deployment the route reaches serves it: no upstream rewrite
                        * reads the header (native.module_upstream_filters), so the backend
                        * is not sent it */
    envoy_dynamic_module_callback_http_get_metadata_bool(f, MD_ROUTE, LIT(LISTENER_NS),
                                                         LIT(ONE_VARIANT_KEY), &only);
    if (append_name(f, body, n, variant, vn) && !only)
      set_header(f, REQUEST_HEADER, NAMED_HEADER, variant, vn);
  }
  free(owned);
  if (s->is_infer) {
    s->t0_ms = now_ms();
    /* the call's own SLO in the access log's entry (services/xds/learning.py: its miss
     * verdict), as the Lua's dynamicMetadata():set("switchyard", "slo_ms", slo) */
    if (s->has_slo)
      envoy_dynamic_module_callback_http_set_dynamic_metadata_number(f, LIT(CALL_NS),
                                                                     LIT("slo_ms"), s->slo_ms);
  }
}

/* ------------------------------------------------------------ upstream rewrite */

static int rewrite_headers(envoy_filter f, filter* s, bool end_of_stream) {
  envoy_buffer variant, named;
  int has_variant = get_header(f, REQUEST_HEADER, VARIANT_HEADER, &variant);
  int has_named = get_header(f, REQUEST_HEADER, NAMED_HEADER, &named) ||
                  get_header(f, REQUEST_HEADER, MODEL_HEADER, &named);
  int needed = has_variant && variant.length > 0 && variant.length < sizeof s->variant &&
               has_named && !(named.length == variant.length &&
                              memcmp(named.ptr, variant.ptr, variant.length) == 0);
  if (needed) {
    memcpy(s->variant, variant.ptr, variant.length);
    s->variant[variant.length] = 0;
  }
  remove_header(f, VARIANT_HEADER);
  remove_header(f, NAMED_HEADER);
  if (!needed || end_of_stream) return HEADERS_CONTINUE;
  s->waiting_body = 1;
  return HEADERS_STOP_ITERATION;
}

static void rewrite_body_done(envoy_filter f, filter* s) {
  s->waiting_body = 0;
  size_t n;
  char* owned;
  const char* body = whole_body(f, &n, &owned);
  if (body != NULL) append_name(f, body, n, s->variant, strlen(s->variant));
  free(owned);
}

/* ------------------------------------------------------------------ event hooks */

EXPORT const char* envoy_dynamic_module_on_program_init(void) {
  return SWITCHYARD_ENVOY_ABI_VERSION;
}

EXPORT void* envoy_dynamic_module_on_http_filter_config_new(void* envoy_config,
                                                            envoy_buffer name,
                                                            envoy_buffer cfg) {
  (void)envoy_config;
  config* c = calloc(1, sizeof *c);
  if (eq(name, "rewrite")) {
    c->rewrite = 1;
    return c;
  }
  if (!eq(name, "listener")) {
    free(c);
    return NULL; /* Envoy rejects the config */
  }
  c->max_message_bytes = c->max_metadata_bytes = c->max_metadata_count = -1;
  char* tmp = malloc(cfg.length + 1);
  c->tenant_sans = malloc(cfg.length / 2 + 1); /* room for every tenant_san decoded */
  if (tmp == NULL || c->tenant_sans == NULL) {
    free(tmp), free(c->tenant_sans), free(c);
    return NULL;
  }
  if (cfg.ptr) memcpy(tmp, cfg.ptr, cfg.length);
  tmp[cfg.length] = 0;
  size_t sans_at = 0;
  char* save = NULL;
  for (char* tok = strtok_r(tmp, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
    if (strncmp(tok, "margin=", 7) == 0) c->margin_ms = atof(tok + 7);
    else if (strncmp(tok, "slow=", 5) == 0) c->slow_path = atoi(tok + 5) != 0;
    else if (strcmp(tok, "tenants=credential") == 0) c->tenants = 1;
    else if (strcmp(tok, "tenants=all") == 0) c->tenants = 2;
    else if (strncmp(tok, "max_message_bytes=", 18) == 0) c->max_message_bytes = atoll(tok + 18);
    else if (strncmp(tok, "max_metadata_bytes=", 19) == 0)
      c->max_metadata_bytes = atoll(tok + 19);
    else if (strncmp(tok, "max_metadata_count=", 19) == 0)
      c->max_metadata_count = atoll(tok + 19);
    else if (strncmp(tok, "tenant_san=", 11) == 0) { /* hex, as native.listener_filter writes */
      for (const char* h = tok + 11; h[0] && h[1]; h += 2) {
        unsigned v;
        if (sscanf(h, "%2x", &v) != 1) break;
        c->tenant_sans[sans_at++] = (char)v;
      }
      c->tenant_sans[sans_at++] = 0;
      c->n_tenant_sans++;
    }
  }
  free(tmp);
  return c;
}

EXPORT void envoy_dynamic_module_on_http_filter_config_destroy(void* p) {
  config* c = p;
  if (c) free(c->tenant_sans);
  free(c);
}

EXPORT void* envoy_dynamic_module_on_http_filter_new(void* c, envoy_filter f) {
  (void)f;
  filter* s = calloc(1, sizeof *s);
  s->cfg = c;
  return s;
}

EXPORT void envoy_dynamic_module_on_http_filter_destroy(void* s) {
  if (s) free(((filter*)s)->fault);
  free(s);
}

EXPORT int envoy_dynamic_module_on_http_filter_request_headers(envoy_filter f, filter* s,
                                                               bool end_of_stream) {
  return s->cfg->rewrite ? rewrite_headers(f, s, end_of_stream)
                         : listener_headers(f, s, end_of_stream);
}

EXPORT int envoy_dynamic_module_on_http_filter_request_body(envoy_filter f, filter* s,
                                                            bool end_of_stream) {
  if (!s->waiting_body) return BODY_CONTINUE;
  if (!end_of_stream) return BODY_STOP_AND_BUFFER;
  if (s->cfg->rewrite) rewrite_body_done(f, s);
  else listener_body_done(f, s);
  return BODY_CONTINUE;
}

EXPORT int envoy_dynamic_module_on_http_filter_request_trailers(envoy_filter f, filter* s) {
  if (s->waiting_body) {
    if (s->cfg->rewrite) rewrite_body_done(f, s);
    else listener_body_done(f, s);
  }
  return TRAILERS_CONTINUE;
}

/* Hooks Envoy resolves for every HTTP filter module; nothing to do in them here. */
EXPORT void envoy_dynamic_module_on_http_filter_stream_complete(void* f, void* s) {
  (void)f, (void)s;
}
EXPORT void* envoy_dynamic_module_on_http_filter_per_route_config_new(envoy_buffer name,
                                                                      envoy_buffer cfg) {
  (void)name, (void)cfg;
  static int unused;
  return &unused;
}
EXPORT void envoy_dynamic_module_on_http_filter_per_route_config_destroy(void* c) { (void)c; }
EXPORT int envoy_dynamic_module_on_http_filter_local_reply(void* f, void* s, uint32_t code,
                                                           envoy_buffer details, bool reset) {
  (void)f, (void)s, (void)code, (void)details, (void)reset;
  return 0;
}
#define NOOP(hook) \
  EXPORT void envoy_dynamic_module_on_http_filter_##hook(void) {}
NOOP(scheduled)
NOOP(http_callout_done)
NOOP(http_stream_headers)
NOOP(http_stream_data)
NOOP(http_stream_trailers)
NOOP(http_stream_complete)
NOOP(http_stream_reset)
NOOP(downstream_above_write_buffer_high_watermark)
NOOP(downstream_below_write_buffer_low_watermark)
NOOP(config_scheduled)
NOOP(config_http_callout_done)
NOOP(config_http_stream_headers)
NOOP(config_http_stream_data)
NOOP(config_http_stream_trailers)
NOOP(config_http_stream_complete)
NOOP(config_http_stream_reset)
