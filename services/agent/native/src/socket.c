/*
 * UNIX stream sockets with SCM_RIGHTS fd passing.
 *
 *   unixListen(path, backlog) -> fd       non-blocking, CLOEXEC; replaces a stale socket file
 *   unixAccept(fd) -> fd | -1             -1 when no connection is pending (EAGAIN)
 *   unixConnect(path) -> fd               non-blocking, CLOEXEC; EAGAIN when the backlog is full
 *   recvMsg(fd, buf) -> null | {bytes, fds, truncated}
 *                                         null on EAGAIN; bytes 0 means EOF
 *   sendMsg(fd, data, fds?) -> bytes | -1 fds ride on the first byte; -1 on EAGAIN
 *   close(fd), dup(fd) -> fd
 */
#include "native.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* At most this many fds are accepted per received message; extra ones are closed. */
#define MAX_RECV_FDS 32
/* The kernel's per-message limit (SCM_MAX_FD). */
#define MAX_SEND_FDS 253

/* close() that keeps errno of the failure we are reporting. */
static void close_keep_errno(int fd) {
  int saved = errno;
  close(fd);
  errno = saved;
}

static bool fill_addr(napi_env env, napi_value v, struct sockaddr_un *addr) {
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (!arg_string(env, v, "socket path", addr->sun_path, sizeof addr->sun_path)) return false;
  if (addr->sun_path[0] == '\0') {
    throw_range(env, "socket path must not be empty");
    return false;
  }
  return true;
}

static napi_value unix_listen(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2, argv);
  struct sockaddr_un addr;
  uint64_t backlog;
  if (!fill_addr(env, argv[0], &addr)) return NULL;
  if (!arg_u64(env, argv[1], "backlog", 4096, &backlog)) return NULL;

  /* Replace a stale socket file, but never anything else living at the path. */
  struct stat st;
  if (lstat(addr.sun_path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      char detail[200];
      snprintf(detail, sizeof detail, "%s exists and is not a socket; refusing to replace it",
               addr.sun_path);
      return throw_errno_detail(env, "listen", EEXIST, detail);
    }
    if (unlink(addr.sun_path) != 0 && errno != ENOENT) return throw_errno(env, "unlink", errno);
  } else if (errno != ENOENT) {
    return throw_errno(env, "lstat", errno);
  }

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    close_keep_errno(fd);
    return throw_errno(env, "bind", errno);
  }
  if (listen(fd, (int)backlog) != 0) {
    close_keep_errno(fd);
    return throw_errno(env, "listen", errno);
  }
  return make_int(env, fd);
}

static napi_value unix_accept(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1, argv);
  int lfd;
  if (!arg_fd(env, argv[0], "fd", &lfd)) return NULL;
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return make_int(env, fd);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return make_int(env, -1);
    return throw_errno(env, "accept4", errno);
  }
}

static napi_value unix_connect(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1, argv);
  struct sockaddr_un addr;
  if (!fill_addr(env, argv[0], &addr)) return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  /* AF_UNIX connect completes at once; EAGAIN means the listener's backlog is full. */
  while (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    if (errno == EINTR) continue;
    close_keep_errno(fd);
    return throw_errno(env, "connect", errno);
  }
  return make_int(env, fd);
}

/* Pointer and length of a Uint8Array argument. */
static bool arg_bytes(napi_env env, napi_value v, const char *what, uint8_t **data, size_t *len) {
  bool is_ta = false;
  napi_typedarray_type type;
  void *p = NULL;
  char msg[128];
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, v, &type, len, &p, NULL, NULL) != napi_ok ||
      type != napi_uint8_array) {
    snprintf(msg, sizeof msg, "%s must be a Uint8Array", what);
    throw_type(env, msg);
    return false;
  }
  *data = p;
  return true;
}

static napi_value recv_msg(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2, argv);
  int fd;
  uint8_t *data;
  size_t len;
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  if (!arg_bytes(env, argv[1], "buffer", &data, &len)) return NULL;
  if (len == 0 || data == NULL) return throw_range(env, "buffer must not be empty");

  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * MAX_RECV_FDS)];
  } control;
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr msg = {
      .msg_iov = &iov,
      .msg_iovlen = 1,
      .msg_control = control.buf,
      .msg_controllen = sizeof control.buf,
  };
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      napi_value null_value;
      NAPI_CALL(env, napi_get_null(env, &null_value));
      return null_value;
    }
    return throw_errno(env, "recvmsg", errno);
  }

  /* Collect the received fds. They are ours now: on any failure below, close them. */
  int fds[MAX_RECV_FDS];
  size_t nfds = 0;
  bool truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char *p = CMSG_DATA(c);
    for (size_t i = 0; i < count; i++) {
      int rfd;
      memcpy(&rfd, p + i * sizeof(int), sizeof rfd);
      if (nfds < MAX_RECV_FDS) fds[nfds++] = rfd;
      else {
        close(rfd); /* more than we accept: do not leak it */
        truncated = true;
      }
    }
  }

  napi_value result, js_bytes, js_fds, js_trunc;
  if (napi_create_object(env, &result) != napi_ok ||
      napi_create_array_with_length(env, nfds, &js_fds) != napi_ok)
    goto fail;
  for (size_t i = 0; i < nfds; i++) {
    napi_value v;
    if (napi_create_int32(env, fds[i], &v) != napi_ok ||
        napi_set_element(env, js_fds, (uint32_t)i, v) != napi_ok)
      goto fail;
  }
  if (napi_create_int64(env, n, &js_bytes) != napi_ok ||
      napi_get_boolean(env, truncated, &js_trunc) != napi_ok ||
      napi_set_named_property(env, result, "bytes", js_bytes) != napi_ok ||
      napi_set_named_property(env, result, "fds", js_fds) != napi_ok ||
      napi_set_named_property(env, result, "truncated", js_trunc) != napi_ok)
    goto fail;
  return result;

fail:
  for (size_t i = 0; i < nfds; i++) close(fds[i]);
  NAPI_CALL(env, napi_generic_failure);
  return NULL;
}

static napi_value send_msg(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3, argv);
  int fd;
  uint8_t *data;
  size_t len;
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  if (!arg_bytes(env, argv[1], "data", &data, &len)) return NULL;

  int fds[MAX_SEND_FDS];
  uint32_t nfds = 0;
  napi_valuetype t;
  NAPI_CALL(env, napi_typeof(env, argv[2], &t));
  if (t != napi_undefined && t != napi_null) {
    bool is_array = false;
    NAPI_CALL(env, napi_is_array(env, argv[2], &is_array));
    if (!is_array) return throw_type(env, "fds must be an array of file descriptors");
    NAPI_CALL(env, napi_get_array_length(env, argv[2], &nfds));
    if (nfds > MAX_SEND_FDS) return throw_range(env, "at most 253 fds can be sent in one message");
    for (uint32_t i = 0; i < nfds; i++) {
      napi_value v;
      NAPI_CALL(env, napi_get_element(env, argv[2], i, &v));
      if (!arg_fd(env, v, "fds[i]", &fds[i])) return NULL;
      /* Check each fd first, so a bad fd is told apart from a broken socket. */
      if (fcntl(fds[i], F_GETFD) < 0) {
        char detail[64];
        snprintf(detail, sizeof detail, "fds[%u] = %d cannot be sent", i, fds[i]);
        return throw_errno_detail(env, "fcntl(F_GETFD)", errno, detail);
      }
    }
  }
  if (len == 0) {
    if (nfds > 0) return throw_range(env, "fds need at least one byte of data to ride on");
    return make_int(env, 0);
  }

  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * MAX_SEND_FDS)];
  } control;
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    memset(control.buf, 0, sizeof control.buf);
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return make_int(env, -1);
    return throw_errno(env, "sendmsg", errno);
  }
  return make_int(env, n);
}

static napi_value close_fd(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1, argv);
  int fd;
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  /* On Linux the fd is released even when close() reports EINTR: never retry. */
  if (close(fd) != 0 && errno != EINTR) return throw_errno(env, "close", errno);
  return make_undefined(env);
}

static napi_value dup_fd(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1, argv);
  int fd;
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return throw_errno(env, "fcntl(F_DUPFD_CLOEXEC)", errno);
  return make_int(env, copy);
}

bool init_socket(napi_env env, napi_value exports) {
  return export_fn(env, exports, "unixListen", unix_listen) &&
         export_fn(env, exports, "unixAccept", unix_accept) &&
         export_fn(env, exports, "unixConnect", unix_connect) &&
         export_fn(env, exports, "recvMsg", recv_msg) &&
         export_fn(env, exports, "sendMsg", send_msg) &&
         export_fn(env, exports, "close", close_fd) &&
         export_fn(env, exports, "dup", dup_fd);
}
