/* The Python edge's rules on what a caller sends, as the C dynamic module holds them: pure
 * functions over bytes (no Envoy callback), each the twin of the listener Lua's and of the
 * Python code it names. switchyard_edge.c answers with what they say. */
#pragma once

#include <stddef.h>

#include "abi.h"

#define NOT_PARSED "request bytes do not parse as a KServe v2 request"

/* x-slo-ms's range, services/edge/hints.py's SLO_RANGE (ms) */
/* the most bytes of a status message sent, percent-encoded (services/grpc_errors.py) */
#define MESSAGE_MAX_BYTES 6000
#define SLO_LO 1e-3
#define SLO_HI 3.6e6

/* hints.py's _once: every repeat of a hint must say what its first said (else an appended
 * header could change it). The contradiction, for sy_hint_message's why. */
#define CONTRADICTS(key) \
  "contradicts an earlier " key "=%s; send the hint once (or repeat the same value)"

/* sy_model_name's code for a compressed message, whose fields cannot be read */
#define COMPRESSED (-1)

/* A hint's number as hints.py's _number reads it: NULL and *out, or why not in its words
 * (written into why). */
const char* sy_hint_number(envoy_buffer b, double lo, double hi, double* out, char* why,
                           size_t why_size);

/* InvalidHint's words: "metadata KEY=VALUE: WHY" (VALUE as Python's repr), WHY's own %s
 * filled with ARG's repr when given, percent-encoded as gRPC sends a grpc-message (the
 * caller reads Python's words). malloc'd (free it); NULL without memory. */
char* sy_hint_message(const char* key, envoy_buffer value, const char* why,
                      const envoy_buffer* arg);

/* [security.limits] on the caller's metadata (h: every header entry): 0, or the gRPC status
 * (8 over max_metadata_bytes, 3 over max_metadata_count on a call or stream, `checked`) with
 * its message in msg. A limit below 0 is not checked. */
/* What a backend's gRPC server would reset the stream for in the caller's own metadata; 0:
 * none. In gRPC's core's order (hostile10, measured on the Python edge): !own, what gRPC's
 * core refuses as it parses the headers, the first in the caller's order of an unreadable
 * grpc-timeout (13, SY_TIMEOUT_UNREADABLE), an unknown grpc-encoding (12), a -bin value not
 * base64 (3), then no te: trailers (3; Triton's gRPC answers UNKNOWN "Missing :te header"),
 * all before sy_metadata_refusal's limits (the Python edge's gate, after its core); own, what
 * the Python edge serves but a backend would refuse, after the limits: a content-type not
 * application/grpc, or none, a response's grpc-status/-message/-status-details-bin, a
 * grpc-previous-rpc-attempts not a count (3). */
int sy_wire_refusal(const envoy_http_header* h, size_t n, int own, char* msg,
                    size_t msg_size);

/* Which of the checks over every header entry read this one: SY_READ_WIRE (sy_wire_refusal
 * may refuse it), SY_READ_HINT (sy_first_fault may), SY_READ_TYPED (a content-type of
 * exactly application/grpc), SY_READ_TE (a te of exactly trailers, all Envoy passes on: it
 * drops any other). A call none of whose entries any check reads, with a typed one and a te,
 * passes both: the listener walks its headers once, not once per check. */
enum { SY_READ_WIRE = 1, SY_READ_HINT = 2, SY_READ_TYPED = 4, SY_READ_TE = 8 };
int sy_reads(const envoy_http_header* e);

/* A grpc-timeout value read as gRPC's core reads it (ParseTimeout in grpc's
 * src/core/lib/transport/timeout_encoding.cc): spaces around, digits, spaces, one unit of
 * H M S m u n, spaces; n and u rounded up to whole ms; more than 1,000,000,000 is no deadline
 * (infinite), never a fault. 1: *ms set; 0: no deadline; -1: unreadable (gRPC refuses the
 * call INTERNAL, SY_TIMEOUT_UNREADABLE). */
int sy_grpc_timeout(envoy_buffer t, double* ms);
int sy_timeout_for_envoy(double ms, char* out, size_t size);
#define SY_TIMEOUT_UNREADABLE "Error parsing 'grpc-timeout' metadata"

int sy_metadata_refusal(const envoy_http_header* h, size_t n, long long max_bytes,
                        long long max_count, int checked, char* msg, size_t msg_size);

/* The hints only the Python edge reads (lua.py's SLOW_HINTS): a ModelInfer carrying one
 * takes the slow path */
extern const char* const SY_SLOW_HINTS[];

/* lua_checks.py's hint_fault: the first header entry, in the caller's order (h: every entry), that
 * hints.py's parse refuses among those the listener reads: x-slo-ms (SLO_RANGE; a repeat
 * must agree as a number), x-tenant (a repeat must agree) and a hint sent as -bin (hints.py's
 * _binary: its first 64 bytes, base64-decoded, quoted). 0, or 1 with its INVALID_ARGUMENT
 * message in *msg (sy_hint_message's: free it; NULL without memory), *binary whether it is a
 * -bin one and *unread whether one of SY_SLOW_HINTS came before it (the Python edge, on the
 * slow path, may refuse that one first). (A repeated x-request-id is joined by Envoy into one,
 * "a,b": README.) */
int sy_first_fault(const envoy_http_header* h, size_t n, char** msg, int* binary,
                   int* unread);

/* The model name of a gRPC-framed request (the last field 1 of its message, as a protobuf
 * parser keeps it), or 0 with a gRPC status (or COMPRESSED) and message. */
int sy_model_name(const unsigned char* b, size_t n, long long max_message_bytes,
                  const char** name, size_t* name_len, int* code, char* msg, size_t msg_size);

/* placement.attempts' VARIANT_GONE_PATTERN parts and GONE_HINT, wire.UNPARSEABLE (Python's
 * constants; tests/unit/test_envoy_dynmod_parity.py sends them) */
#define TRITON_UNKNOWN_MODEL "Request for unknown model: '"
#define GONE_HINT                                                                          \
  " (the variant was unloaded there or its server is shutting down; placement drops it " \
  "from the route table on its next report: retry)"
#define UNPARSEABLE "Unable to parse request"

/* A backend's status as the caller gets it from the Python edge (lua_response.py's envoy_on_response):
 * NOT_FOUND for the variant it was sent, after every retry, is UNAVAILABLE with GONE_HINT
 * appended (the caller's model exists, the table is behind); INTERNAL for request bytes
 * whose tensors do not parse is INVALID_ARGUMENT. 0: as it is; else the new status and *out
 * (malloc'd; free it). */
int sy_backend_status(int status, envoy_buffer message, char** out);
