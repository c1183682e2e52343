/* The Python edge's rules on what a caller sends, in C (rules.h): hint numbers and their
 * words (services/edge/hints.py), the metadata limits ([security.limits]), a hint sent as a
 * -bin header, and the request body's walk to its model name (services/edge/wire.py). The
 * listener Lua (services/xds/lua.py) holds the same; tests/unit/test_envoy_dynmod_parity.py
 * holds this to the Python edge. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "rules.h"

/* Every hint services/edge/hints.py reads (its HINTS): sent as a -bin header, refused */
static const char* const HINTS[] = {"x-slo-ms", "x-min-quality", "x-max-cost-usd", "x-tenant",
                                    "x-request-id", "x-allowed-regions", "x-fail-fast",
                                    "x-routing-profile", "x-ttft-ms", "x-tpot-ms",
                                    "x-max-tokens", "x-session-id", "x-allow-variant-change",
                                    NULL};

/* Is b, whole, services/edge/hints.py's _DECIMAL: an optional sign, digits with at most one
 * point (digits before or after it), an optional exponent? No hex, spaces, "_", inf or nan,
 * which strtod (or Lua's tonumber) would take. */
static int is_decimal(const char* s, size_t n) {
  size_t i = 0, whole = 0, frac = 0, exp = 0;
  if (i < n && (s[i] == '+' || s[i] == '-')) i++;
  for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) whole++;
  if (i < n && s[i] == '.')
    for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++) frac++;
  if (whole == 0 && frac == 0) return 0;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '+' || s[i] == '-')) i++;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) exp++;
    if (exp == 0) return 0;
  }
  return i == n;
}

const char* sy_hint_number(envoy_buffer b, double lo, double hi, double* out, char* why,
                           size_t why_size) {
  if (!is_decimal(b.ptr, b.length)) return "not a number";
  char* tmp = malloc(b.length + 1); /* digits only: the C locale's strtod reads them */
  if (tmp == NULL) return "not a number";
  memcpy(tmp, b.ptr, b.length);
  tmp[b.length] = 0;
  double v = strtod(tmp, NULL) + 0.0; /* 1e400: inf, as Python's float; -0 is 0 */
  free(tmp);
  if (v != v || v < lo || v > hi) {
    snprintf(why, why_size, "must be between %g and %g", lo, hi); /* Python's :g */
    return why;
  }
  *out = v;
  return NULL;
}

/* The next code point of s[*i..n) as Python's decode("utf-8", "replace") reads it: U+FFFD
 * for a byte that starts no character and for each maximal cut-short prefix of one (lua.py's
 * codepoints). */
static unsigned long next_cp(const unsigned char* s, size_t n, size_t* i) {
  unsigned char c = s[*i], lo = 0x80, hi = 0xBF;
  size_t k;
  if (c < 0x80) {
    (*i)++;
    return c;
  }
  if (c >= 0xC2 && c <= 0xDF) k = 1;
  else if (c >= 0xE0 && c <= 0xEF) k = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4) k = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else {
    (*i)++;
    return 0xFFFD;
  }
  unsigned long cp = c & (0x3F >> k);
  size_t j = 1;
  for (; j <= k && *i + j < n && s[*i + j] >= lo && s[*i + j] <= hi; j++, lo = 0x80, hi = 0xBF)
    cp = cp << 6 | (s[*i + j] & 0x3F);
  if (j <= k) {
    *i += j;
    return 0xFFFD;
  }
  *i += k + 1;
  return cp;
}

/* Python's repr of a header value (its bytes read as UTF-8, next_cp), as InvalidHint quotes
 * it, appended at out (room for 4 bytes per byte of b and 2 quotes); returns the end. As
 * lua.py's quoted: \xNN for control characters and Latin-1's unprintable ones (U+0080 to
 * U+00A0, U+00AD); any other character as it is. */
static char* py_repr(char* out, envoy_buffer b) {
  const unsigned char* s = (const unsigned char*)b.ptr;
  int single = b.length && memchr(b.ptr, '\'', b.length) != NULL;
  int dbl = b.length && memchr(b.ptr, '"', b.length) != NULL;
  char q = single && !dbl ? '"' : '\'';
  *out++ = q;
  for (size_t i = 0; i < b.length;) {
    size_t at = i;
    unsigned long c = next_cp(s, b.length, &i);
    if (c == '\\' || c == (unsigned char)q) *out++ = '\\', *out++ = (char)c;
    else if (c == '\t') *out++ = '\\', *out++ = 't';
    else if (c == '\n') *out++ = '\\', *out++ = 'n';
    else if (c == '\r') *out++ = '\\', *out++ = 'r';
    else if (c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad)
      out += sprintf(out, "\\x%02lx", c);
    else if (c == 0xFFFD) /* a replaced byte or prefix (or U+FFFD itself): 3 bytes for >= 1 */
      memcpy(out, "\xEF\xBF\xBD", 3), out += 3;
    else {
      memcpy(out, s + at, i - at); /* the character's own bytes */
      out += i - at;
    }
  }
  *out++ = q;
  *out = 0;
  return out;
}

char* sy_hint_message(const char* key, envoy_buffer value, const char* why,
                      const envoy_buffer* arg) {
  size_t room = strlen(key) * 2 + strlen(why) + 4 * value.length + 64 +
                (arg ? 4 * arg->length : 0);
  char* msg = malloc(room);
  if (msg == NULL) return NULL;
  char* end = msg + sprintf(msg, "metadata %s=", key);
  end = py_repr(end, value);
  end += sprintf(end, ": ");
  const char* hole = arg ? strstr(why, "%s") : NULL;
  if (hole) {
    memcpy(end, why, (size_t)(hole - why));
    end = py_repr(end + (hole - why), *arg);
    strcpy(end, hole + 2);
  } else {
    strcpy(end, why);
  }
  /* percent-encoded as gRPC sends a grpc-message (lua.py's reply): the caller's client
   * decodes it, so a value's "%20" must reach it as %2520, a non-ASCII byte as %XX; cut
   * where that passes MESSAGE_MAX_BYTES, as services/grpc_errors.py's _capped cuts it (a
   * 7,000-character value echoed whole was a trailer over the client's own limit: "Stream
   * removed", the hint never named) */
  size_t chars = 0, size = 0;
  const unsigned char *start = (const unsigned char*)msg, *cut = NULL;
  for (const unsigned char* c = start; *c; c++) {
    if ((*c & 0xC0) != 0x80) {
      chars++; /* a character starts here (UTF-8) */
      if (cut == NULL) start = c;
    }
    size += *c < 0x20 || *c > 0x7e || *c == '%' ? 3 : 1;
    if (cut == NULL && size > MESSAGE_MAX_BYTES) cut = start;
  }
  char* wire = malloc(3 * strlen(msg) + 48);
  if (wire != NULL) {
    char* w = wire;
    for (const unsigned char* c = (const unsigned char*)msg; *c && c != cut; c++)
      w += *c < 0x20 || *c > 0x7e || *c == '%' ? sprintf(w, "%%%02X", *c) : (*w = (char)*c, 1);
    if (cut != NULL) w += sprintf(w, "... (%zu characters)", chars);
    *w = 0;
  }
  free(msg);
  return wire;
}

static int key_is(const envoy_http_header* h, const char* s) {
  size_t n = strlen(s);
  return h->key_length == n && memcmp(h->key_ptr, s, n) == 0;
}

/* lua_checks.py's metadata_refusal, as the Python edge applies [security.limits]: its gRPC server
 * refuses a header list over max_metadata_bytes (HPACK's size: name + value + 32 per entry;
 * services/security/transport.py), its tenant gate a call or stream carrying more custom
 * entries than max_metadata_count (not pseudo-headers, user-agent, te, content-type,
 * x-request-id or grpc-*; services/security/tenants.py, in its words). Envoy's own
 * x-forwarded-proto and x-forwarded-client-cert are not the caller's. */
int sy_metadata_refusal(const envoy_http_header* h, size_t n, long long max_bytes,
                        long long max_count, int checked, char* msg, size_t msg_size) {
  if (max_bytes < 0 && max_count < 0) return 0;
  long long size = 0, count = 0;
  for (size_t i = 0; i < n; i++) {
    if (key_is(&h[i], "x-forwarded-proto") || key_is(&h[i], "x-forwarded-client-cert"))
      continue;
    size += (long long)(h[i].key_length + h[i].value_length) + 32;
    if (key_is(&h[i], "user-agent") || key_is(&h[i], "te") || key_is(&h[i], "content-type") ||
        key_is(&h[i], "x-request-id") || (h[i].key_length > 0 && h[i].key_ptr[0] == ':') ||
        (h[i].key_length >= 5 && memcmp(h[i].key_ptr, "grpc-", 5) == 0))
      continue;
    count++;
  }
  if (max_bytes >= 0 && size > max_bytes) {
    snprintf(msg, msg_size, "metadata of %lld bytes is larger than max_metadata_bytes "
             "(%lld vs. %lld)", size, size, max_bytes);
    return 8;
  }
  if (max_count >= 0 && checked && count > max_count) {
    snprintf(msg, msg_size, "call carries %lld metadata entries (limit %lld)", count, max_count);
    return 3;
  }
  return 0;
}

/* What a backend's gRPC server resets the stream for in a caller's own metadata. Envoy
 * forwards the caller's headers as they came and takes the reset for the backend's failure:
 * retried at the next deployment and counted by outlier detection there (six such calls
 * ejected every deployment of a model; so did a content-type not gRPC's). An unknown
 * grpc-encoding is UNIMPLEMENTED, as gRPC's spec says; a content-type that is not
 * application/grpc (or none), a -bin value that is not base64, a response's grpc-status,
 * grpc-message or grpc-status-details-bin, and a grpc-previous-rpc-attempts that is not a
 * count are INVALID_ARGUMENT. The Python edge's own gRPC server refuses them before any backend
 * (INTERNAL). 0: none, else the code, its message in msg. */
static int value_is(const envoy_http_header* h, const char* s) {
  size_t n = strlen(s);
  return h->value_length == n && memcmp(h->value_ptr, s, n) == 0;
}

static int is_base64(const char* v, size_t n) {
  size_t pad = 0;
  while (pad < 2 && n > 0 && v[n - 1] == '=') {
    n--;
    pad++;
  }
  for (size_t i = 0; i < n; i++) {
    char c = v[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
          c == '+' || c == '/'))
      return 0;
  }
  return pad ? (n + pad) % 4 == 0 : n % 4 != 1;
}

static int is_count(const char* v, size_t n) {
  if (n == 0 || n > 9) return 0;
  for (size_t i = 0; i < n; i++)
    if (v[i] < '0' || v[i] > '9') return 0;
  return 1;
}

/* at most 40 bytes of a value, each not printable ASCII as '?' (for a message) */
static const char* printable(const envoy_http_header* h, char* out) {
  size_t n = h->value_length < 40 ? h->value_length : 40;
  for (size_t i = 0; i < n; i++) {
    char c = h->value_ptr[i];
    out[i] = (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  out[n] = 0;
  return out;
}

static int grpc_content_type(const envoy_http_header* e) {
  static const char base[] = "application/grpc";
  size_t n = sizeof base - 1;
  if (e->value_length < n || memcmp(e->value_ptr, base, n) != 0) return 0;
  return e->value_length == n || e->value_ptr[n] == '+' || e->value_ptr[n] == ';';
}

int sy_wire_refusal(const envoy_http_header* h, size_t n, int own, char* msg,
                    size_t msg_size) {
  char v[41];
  int typed = 0, trailers = 0;
  for (size_t i = 0; i < n; i++) {
    const envoy_http_header* e = &h[i];
    size_t k = e->key_length;
    if (key_is(e, "te")) { /* Envoy keeps only te: trailers; gRPC needs it */
      trailers |= value_is(e, "trailers");
      continue;
    }
    if (key_is(e, "content-type")) {
      if (grpc_content_type(e)) {
        typed = 1;
        continue;
      }
      if (!own) continue;
      snprintf(msg, msg_size, "content-type %s is not gRPC's: send application/grpc",
               printable(e, v));
      return 3;
    }
    if (!own && key_is(e, "grpc-timeout")) {
      double ms;
      envoy_buffer t = {e->value_ptr ? e->value_ptr : "", e->value_length};
      if (sy_grpc_timeout(t, &ms) >= 0) continue;
      snprintf(msg, msg_size, "%s", SY_TIMEOUT_UNREADABLE);
      return 13;
    }
    if (key_is(e, "grpc-encoding")) {
      if (own || value_is(e, "identity") || value_is(e, "gzip") || value_is(e, "deflate"))
        continue;
      snprintf(msg, msg_size, "grpc-encoding %s is not supported: send identity, gzip or "
               "deflate", printable(e, v));
      return 12;
    }
    if (own && (key_is(e, "grpc-status") || key_is(e, "grpc-message") ||
                key_is(e, "grpc-status-details-bin"))) {
      snprintf(msg, msg_size, "metadata %.*s is a response's; a call does not send it",
               (int)k, e->key_ptr);
      return 3;
    }
    if (own && key_is(e, "grpc-previous-rpc-attempts") &&
        !is_count(e->value_ptr, e->value_length)) {
      snprintf(msg, msg_size, "metadata grpc-previous-rpc-attempts=%s is not a count of "
               "attempts", printable(e, v));
      return 3;
    }
    if (!own && k > 4 && memcmp(e->key_ptr + k - 4, "-bin", 4) == 0 &&
        !key_is(e, "grpc-status-details-bin") && !is_base64(e->value_ptr, e->value_length)) {
      snprintf(msg, msg_size, "metadata %.*s is not base64, as a -bin header's value must be",
               (int)(k < 200 ? k : 200), e->key_ptr);
      return 3;
    }
  }
  if (!own && !trailers && n > 0) {
    snprintf(msg, msg_size, "a call without te: trailers is not gRPC: send te: trailers");
    return 3;
  }
  if (own && !typed && n > 0) {
    snprintf(msg, msg_size, "a call without a content-type is not gRPC: send application/grpc");
    return 3;
  }
  return 0;
}

int sy_reads(const envoy_http_header* e) {
  size_t k = e->key_length;
  if (key_is(e, "content-type"))
    return value_is(e, "application/grpc") ? SY_READ_TYPED : SY_READ_WIRE;
  if (key_is(e, "te")) return value_is(e, "trailers") ? SY_READ_TE : SY_READ_WIRE;
  if (k > 4 && memcmp(e->key_ptr + k - 4, "-bin", 4) == 0) return SY_READ_WIRE | SY_READ_HINT;
  if (k >= 5 && memcmp(e->key_ptr, "grpc-", 5) == 0)
    return (key_is(e, "grpc-encoding") || key_is(e, "grpc-status") ||
            key_is(e, "grpc-message") || key_is(e, "grpc-previous-rpc-attempts"))
               ? SY_READ_WIRE : 0;
  return key_is(e, "x-slo-ms") || key_is(e, "x-tenant") ? SY_READ_HINT : 0;
}

static int one_timeout(const char* p, const char* end, double* ms) {
  long long x = 0;
  int digit = 0;
  while (p != end && *p == ' ') p++;
  for (; p != end && *p >= '0' && *p <= '9'; p++) {
    digit = 1;
    if (x >= 100000000 && (x != 100000000 || *p != '0')) return 0; /* infinite */
    x = x * 10 + (*p - '0');
  }
  if (!digit) return -1;
  while (p != end && *p == ' ') p++;
  if (p == end) return -1;
  switch (*p++) {
    case 'n': *ms = (double)(x / 1000000 + (x % 1000000 != 0)); break;
    case 'u': *ms = (double)(x / 1000 + (x % 1000 != 0)); break;
    case 'm': *ms = (double)x; break;
    case 'S': *ms = (double)x * 1000; break;
    case 'M': *ms = (double)x * 60000; break;
    case 'H': *ms = (double)x * 3600000; break;
    default: return -1;
  }
  while (p != end && *p == ' ') p++;
  return p == end ? 1 : -1;
}

int sy_grpc_timeout(envoy_buffer t, double* ms) {
  if (t.ptr == NULL) return 0;
  /* a repeat comes joined "1S,50S": gRPC's core parses each (any unreadable one refuses the
   * call) and keeps the last */
  const char* p = t.ptr;
  const char* end = p + t.length;
  int got = 0;
  for (;;) {
    const char* comma = memchr(p, ',', (size_t)(end - p));
    const char* stop = comma ? comma : end;
    got = one_timeout(p, stop, ms);
    if (got < 0) return -1;
    if (!comma) return got;
    p = comma + 1;
  }
}

int sy_timeout_for_envoy(double ms, char* out, size_t size) {
  static const struct { char unit; double per; } units[] = {
      {'m', 1}, {'S', 1000}, {'M', 60000}, {'H', 3600000}};
  for (size_t i = 0; i < 4; i++) {
    double v = ceil(ms / units[i].per);
    if (v <= 99999999) return snprintf(out, size, "%.0f%c", v, units[i].unit);
  }
  return 0;
}

/* A -bin header's bytes as gRPC carries them (base64, padded or not), at most `limit` of
 * them into out; how many. */
static size_t unbase64(envoy_buffer b, unsigned char* out, size_t limit) {
  static const char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  unsigned long bits = 0;
  int nbits = 0;
  size_t n = 0;
  for (size_t i = 0; i < b.length && n < limit; i++) {
    const char* at = b.ptr[i] ? memchr(alphabet, b.ptr[i], 64) : NULL;
    if (at == NULL) continue;
    bits = (bits << 6 | (unsigned long)(at - alphabet)) & 0xFFFFFF;
    nbits += 6;
    if (nbits >= 8) {
      nbits -= 8;
      out[n++] = (unsigned char)(bits >> nbits);
    }
  }
  return n;
}

const char* const SY_SLOW_HINTS[] = {"x-min-quality", "x-max-cost-usd", "x-allowed-regions",
                                     "x-fail-fast", "x-routing-profile", NULL};

static int key_in(const envoy_http_header* h, const char* const* names) {
  for (; *names; names++)
    if (key_is(h, *names)) return 1;
  return 0;
}

/* A hint hints.py reads, sent as a -bin header: the hint (its name without -bin), or NULL. */
static const char* binary_hint(const envoy_http_header* h) {
  size_t k = h->key_length;
  if (k <= 4 || memcmp(h->key_ptr + k - 4, "-bin", 4) != 0) return NULL;
  for (const char* const* hint = HINTS; *hint; hint++)
    if (strlen(*hint) == k - 4 && memcmp(h->key_ptr, *hint, k - 4) == 0) return *hint;
  return NULL;
}

/* hints.py's _binary: skipped, a hint sent as -bin would serve the call as if the caller had
 * sent no SLO, floor, region set or tenant; refused, the value's first 64 bytes quoted (each
 * up to 9 bytes on the wire, a U+FFFD as %EF%BF%BD: the message is as long as it needs). */
static char* binary_message(const envoy_http_header* h, const char* hint) {
  unsigned char bytes[64];
  envoy_buffer value = {(const char*)bytes, 0};
  if (h->value_ptr != NULL)
    value.length = unbase64((envoy_buffer){h->value_ptr, h->value_length}, bytes, sizeof bytes);
  char key[128], why[160];
  snprintf(key, sizeof key, "%.*s", (int)h->key_length, h->key_ptr);
  snprintf(why, sizeof why, "%s is a text header; a binary one is not read as the hint", hint);
  return sy_hint_message(key, value, why, NULL);
}

int sy_first_fault(const envoy_http_header* h, size_t n, char** msg, int* binary,
                   int* unread) {
  envoy_buffer slo = {"", 0}, tenant = {"", 0};
  int has_slo = 0, has_tenant = 0;
  double slo_v = 0;
  *msg = NULL;
  *binary = *unread = 0;
  for (size_t i = 0; i < n; i++) {
    envoy_buffer value = {h[i].value_ptr ? h[i].value_ptr : "", h[i].value_length};
    const char* hint = binary_hint(&h[i]);
    if (hint != NULL) {
      *binary = 1;
      *msg = binary_message(&h[i], hint);
      return 1;
    }
    if (key_in(&h[i], SY_SLOW_HINTS)) {
      *unread = 1;
    } else if (key_is(&h[i], "x-slo-ms")) {
      double v = 0;
      char why[96];
      const char* bad = sy_hint_number(value, SLO_LO, SLO_HI, &v, why, sizeof why);
      if (bad != NULL || (has_slo && v != slo_v)) {
        *msg = sy_hint_message("x-slo-ms", value, bad ? bad : CONTRADICTS("x-slo-ms"),
                               bad ? NULL : &slo);
        return 1;
      }
      if (!has_slo) slo = value, slo_v = v, has_slo = 1;
    } else if (key_is(&h[i], "x-tenant")) {
      if (has_tenant && (value.length != tenant.length ||
                         memcmp(value.ptr, tenant.ptr, value.length) != 0)) {
        *msg = sy_hint_message("x-tenant", value, CONTRADICTS("x-tenant"), &tenant);
        return 1;
      }
      if (!has_tenant) tenant = value, has_tenant = 1;
    }
  }
  return 0;
}

static int varint(const unsigned char* b, size_t* pos, size_t stop, uint64_t* out) {
  uint64_t v = 0;
  for (int i = 0; i < 10 && *pos < stop; i++) {
    unsigned char c = b[(*pos)++];
    v |= (uint64_t)(c & 0x7f) << (7 * i);
    if (c < 0x80) {
      *out = v;
      return 1;
    }
  }
  return 0;
}

/* Is s UTF-8 as Python's strict decoder reads it (no overlong forms, surrogates or code
 * points past U+10FFFF)? The Python edge refuses a model name that is not (lua.py's utf8). */
static int utf8(const unsigned char* s, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned char c = s[i];
    size_t k;
    if (c < 0x80) k = 0;
    else if (c >= 0xC2 && c <= 0xDF) k = 1;
    else if (c >= 0xE0 && c <= 0xEF) k = 2;
    else if (c >= 0xF0 && c <= 0xF4) k = 3;
    else return 0;
    if (i + k >= n && k > 0) return 0;
    for (size_t j = 1; j <= k; j++)
      if (s[i + j] < 0x80 || s[i + j] > 0xBF) return 0;
    if (k > 0) {
      unsigned char d = s[i + 1];
      if ((c == 0xE0 && d < 0xA0) || (c == 0xED && d > 0x9F) || (c == 0xF0 && d < 0x90) ||
          (c == 0xF4 && d > 0x8F))
        return 0;
    }
    i += k + 1;
  }
  return 1;
}

int sy_model_name(const unsigned char* b, size_t n, long long max_message_bytes,
                  const char** name, size_t* name_len, int* code, char* msg, size_t msg_size) {
  *code = 3;
  if (n < 5) {
    snprintf(msg, msg_size, NOT_PARSED " (no gRPC message)");
    return 0;
  }
  if (b[0] != 0) {
    *code = COMPRESSED;
    snprintf(msg, msg_size,
             "compressed requests are not routed by the Envoy edge; send them uncompressed");
    return 0;
  }
  size_t stop = 5 + (((size_t)b[1] << 24) | ((size_t)b[2] << 16) | ((size_t)b[3] << 8) | b[4]);
  if (max_message_bytes >= 0 && (long long)(stop - 5) > max_message_bytes) {
    *code = 8;
    snprintf(msg, msg_size, "request of %lld bytes is larger than max_message_bytes (%lld vs. "
             "%lld)", (long long)(stop - 5), (long long)(stop - 5), max_message_bytes);
    return 0;
  }
  if (stop > n) {
    snprintf(msg, msg_size, NOT_PARSED " (truncated gRPC message)");
    return 0;
  }
  size_t pos = 5;
  *name = NULL;
  *name_len = 0;
  while (pos < stop) {
    uint64_t key, v;
    if (!varint(b, &pos, stop, &key)) {
      snprintf(msg, msg_size, NOT_PARSED " (truncated varint)");
      return 0;
    }
    uint64_t field = key >> 3, wire = key & 7;
    if (field == 0) {
      snprintf(msg, msg_size, NOT_PARSED " (field number 0)");
      return 0;
    }
    if (wire == 2) {
      if (!varint(b, &pos, stop, &v) || v > stop - pos) {
        snprintf(msg, msg_size, NOT_PARSED " (truncated field %llu)", (unsigned long long)field);
        return 0;
      }
      if (field == 1) {
        *name = (const char*)b + pos;
        *name_len = v;
      }
      pos += v;
    } else if (wire == 0) {
      if (!varint(b, &pos, stop, &v)) {
        snprintf(msg, msg_size, NOT_PARSED " (truncated varint)");
        return 0;
      }
    } else if (wire == 1) {
      pos += 8;
    } else if (wire == 5) {
      pos += 4;
    } else {
      snprintf(msg, msg_size, NOT_PARSED " (wire type %llu)", (unsigned long long)wire);
      return 0;
    }
  }
  if (pos != stop) {
    snprintf(msg, msg_size, NOT_PARSED " (truncated fixed-width field)");
    return 0;
  }
  if (*name == NULL || *name_len == 0) {
    snprintf(msg, msg_size, "the request's model name is empty; set the model to call");
    return 0;
  }
  if (*name_len > 1024) {
    snprintf(msg, msg_size, "model_name is longer than 1024 bytes");
    return 0;
  }
  if (!utf8((const unsigned char*)*name, *name_len)) {
    snprintf(msg, msg_size, "model_name is not valid UTF-8"); /* services/edge/wire.py's */
    return 0;
  }
  return 1;
}

/* Does message read "Request for unknown model: '<name>' <ending>" (no quote in the name)? */
static int variant_gone(envoy_buffer m) {
  static const char* const endings[] = {"has no available versions", "is not found", NULL};
  size_t k = sizeof(TRITON_UNKNOWN_MODEL) - 1;
  if (m.length < k || memcmp(m.ptr, TRITON_UNKNOWN_MODEL, k) != 0) return 0;
  const char* quote = memchr(m.ptr + k, '\'', m.length - k);
  if (quote == NULL) return 0;
  size_t rest = m.length - (size_t)(quote - m.ptr) - 1;
  if (rest < 1 || quote[1] != ' ') return 0;
  for (const char* const* e = endings; *e; e++)
    if (strlen(*e) == rest - 1 && memcmp(quote + 2, *e, rest - 1) == 0) return 1;
  return 0;
}

int sy_backend_status(int status, envoy_buffer message, char** out) {
  static const char unparseable[] = UNPARSEABLE;
  static const char said[] = "request bytes do not parse as a ModelInferRequest (the "
                             "deployment answered: ";
  *out = NULL;
  if (status == 5 && variant_gone(message)) {
    size_t n = message.length + sizeof(GONE_HINT);
    if ((*out = malloc(n)) == NULL) return 0;
    memcpy(*out, message.ptr, message.length);
    memcpy(*out + message.length, GONE_HINT, sizeof(GONE_HINT));
    return 14;
  }
  if (status == 13 && message.length >= sizeof unparseable - 1 &&
      memcmp(message.ptr, unparseable, sizeof unparseable - 1) == 0) {
    size_t n = sizeof said - 1 + message.length + 2;
    if ((*out = malloc(n)) == NULL) return 0;
    memcpy(*out, said, sizeof said - 1);
    memcpy(*out + sizeof said - 1, message.ptr, message.length);
    memcpy(*out + sizeof said - 1 + message.length, ")", 2);
    return 3;
  }
  return 0;
}
