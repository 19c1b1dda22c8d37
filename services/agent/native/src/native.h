/*
 * Shared helpers of the gpiofabric native addon.
 *
 * Conventions used by every exported function:
 *  - fds are plain ints; a function that creates an fd returns it to JS, which owns it.
 *  - every syscall result is checked; a failure becomes a JS exception whose message is
 *    "<syscall>: <ERRNO NAME> (<strerror>)" with .code, .errno and .syscall properties
 *    (an instance of the error class registered with setErrorClass(), else Error).
 *  - argument errors (wrong type, out of range) become TypeError / RangeError.
 */
#ifndef GPIOFABRIC_NATIVE_H
#define GPIOFABRIC_NATIVE_H

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Throw an errno exception for `syscall` (err is a positive errno value). Returns NULL. */
napi_value throw_errno(napi_env env, const char *syscall, int err);
/* Create (not throw) an errno exception; `detail` (may be NULL) is appended to the message. */
napi_value make_errno_error(napi_env env, const char *syscall, int err, const char *detail);
/* Same as throw_errno with a detail sentence appended to the message. */
napi_value throw_errno_detail(napi_env env, const char *syscall, int err, const char *detail);
/* Throw a TypeError / RangeError with a plain message. Return NULL. */
napi_value throw_type(napi_env env, const char *msg);
napi_value throw_range(napi_env env, const char *msg);

/* If the last N-API call failed, make sure an exception is pending and return NULL. */
#define NAPI_CALL(env, call)                                                   \
  do {                                                                         \
    if ((call) != napi_ok) {                                                   \
      bool pending_ = false;                                                   \
      napi_is_exception_pending((env), &pending_);                             \
      if (!pending_) {                                                         \
        const napi_extended_error_info *info_ = NULL;                          \
        napi_get_last_error_info((env), &info_);                               \
        napi_throw_error((env), NULL,                                          \
                         info_ && info_->error_message ? info_->error_message  \
                                                       : "N-API call failed"); \
      }                                                                        \
      return NULL;                                                             \
    }                                                                          \
  } while (0)

/* Read argument helpers; on failure they throw and return false. */
bool arg_fd(napi_env env, napi_value v, const char *what, int *out);
bool arg_u64(napi_env env, napi_value v, const char *what, uint64_t max, uint64_t *out);
bool arg_string(napi_env env, napi_value v, const char *what, char *buf, size_t cap);

/* Fetch exactly `n` arguments (missing ones are undefined). */
#define GET_ARGS(env, info, n, argv)                                           \
  size_t argc_ = (n);                                                          \
  napi_value argv[(n) > 0 ? (n) : 1];                                          \
  NAPI_CALL((env), napi_get_cb_info((env), (info), &argc_, argv, NULL, NULL))

napi_value make_int(napi_env env, int64_t v);
napi_value make_undefined(napi_env env);

/* Module pieces: each registers its functions on `exports`. */
bool init_errors(napi_env env, napi_value exports);
bool init_socket(napi_env env, napi_value exports);
bool init_memory(napi_env env, napi_value exports);
bool init_eventfd(napi_env env, napi_value exports);
bool init_watch(napi_env env, napi_value exports);

/* Define a function property on `exports`. */
bool export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb);

#endif
