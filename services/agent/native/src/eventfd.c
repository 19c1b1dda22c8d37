/*
 * eventfd: the vhost-user kick and call notifiers.
 *
 *   eventfd() -> fd                     eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
 *   eventfdRead(fd) -> bigint           the counter (reset to 0); 0n when nothing is pending
 *   eventfdWrite(fd, value = 1n)        adds value (1 .. 2^64-2) to the counter
 */
#include "native.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

static napi_value do_eventfd(napi_env env, napi_callback_info info) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return throw_errno(env, "eventfd", errno);
  return make_int(env, fd);
}

static napi_value do_read(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1, argv);
  int fd;
  uint64_t value = 0;
  napi_value result;
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  ssize_t n;
  do {
    n = read(fd, &value, sizeof value);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) return throw_errno(env, "read", errno);
    value = 0;
  } else if (n != sizeof value) {
    return throw_errno(env, "read", EINVAL); /* not an eventfd */
  }
  NAPI_CALL(env, napi_create_bigint_uint64(env, value, &result));
  return result;
}

static napi_value do_write(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2, argv);
  int fd;
  uint64_t value = 1;
  napi_valuetype t;
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  NAPI_CALL(env, napi_typeof(env, argv[1], &t));
  if (t != napi_undefined) {
    if (!arg_u64(env, argv[1], "value", UINT64_MAX - 1, &value)) return NULL;
    if (value == 0) return throw_range(env, "value must be > 0");
  }
  ssize_t n;
  do {
    n = write(fd, &value, sizeof value);
  } while (n < 0 && errno == EINTR);
  /* EAGAIN: the counter would overflow (the reader is not draining). */
  if (n < 0) return throw_errno(env, "write", errno);
  if (n != sizeof value) return throw_errno(env, "write", EIO);
  return make_undefined(env);
}

bool init_eventfd(napi_env env, napi_value exports) {
  return export_fn(env, exports, "eventfd", do_eventfd) &&
         export_fn(env, exports, "eventfdRead", do_read) &&
         export_fn(env, exports, "eventfdWrite", do_write);
}
