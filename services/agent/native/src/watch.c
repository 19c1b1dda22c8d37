/*
 * A poll watcher: a libuv uv_poll_t on the Node event loop that calls a JS function when
 * an fd becomes readable / writable / hung up.
 *
 *   watchCreate(fd, cb) -> handle          cb(events: number, error?: Error)
 *   watchStart(handle, events)             events: 1 readable | 2 writable | 4 disconnect
 *   watchStop(handle)                      no more callbacks until started again
 *   watchClose(handle)                     stop for good and release the uv handle
 *
 * Rules (libuv's): one watcher per fd at a time, and stop (or close) the watcher before
 * closing its fd. An active watcher keeps the event loop (and so the process) alive, like
 * any Node handle; a stopped one does not.
 *
 * Lifetime: the struct is owned jointly by the JS handle object (napi_wrap) and the uv
 * handle; it is freed when the object is collected AND uv_close has completed. While the
 * watcher is active the JS object is held strongly, so it cannot be collected mid-flight.
 *
 * Callbacks go through napi_make_callback (async context, nextTick/microtask processing).
 * An exception thrown by the callback is handed to napi_fatal_exception, which raises
 * 'uncaughtException' exactly like an exception thrown in any other Node callback.
 */
#include "native.h"

#include <stdlib.h>
#include <uv.h>

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref cb;   /* strong ref to the JS callback (until close) */
  napi_ref self; /* ref to the JS handle object: strong while active, weak otherwise */
  napi_async_context async_ctx;
  bool active;
  bool closing;   /* uv_close requested */
  bool closed;    /* uv_close completed */
  bool js_alive;  /* the JS handle object still exists */
} watch_t;

static const napi_type_tag WATCH_TAG = {0x6770696f66616272ULL, 0x77617463686572ULL};

static void on_uv_closed(uv_handle_t *h) {
  watch_t *w = h->data;
  w->closed = true;
  if (!w->js_alive) free(w);
}

/* Stop for good: drop the JS references and close the uv handle. */
static void start_close(watch_t *w, bool from_finalizer) {
  if (w->closing) return;
  w->closing = true;
  if (w->active) uv_poll_stop(&w->poll);
  w->active = false;
  if (w->cb != NULL) napi_delete_reference(w->env, w->cb);
  w->cb = NULL;
  if (w->self != NULL) napi_delete_reference(w->env, w->self);
  w->self = NULL;
  /* During a finalizer the env may be tearing down: skip the async-hooks destroy event. */
  if (!from_finalizer && w->async_ctx != NULL) napi_async_destroy(w->env, w->async_ctx);
  w->async_ctx = NULL;
  uv_close((uv_handle_t *)&w->poll, on_uv_closed);
}

static void finalize_watch(napi_env env, void *data, void *hint) {
  watch_t *w = data;
  w->js_alive = false;
  if (!w->closing) start_close(w, true);
  else if (w->closed) free(w);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  watch_t *w = h->data;
  napi_env env = w->env;
  if (w->closing || w->cb == NULL) return;

  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn = NULL, recv = NULL, args[2];
  napi_get_reference_value(env, w->cb, &fn);
  if (w->self != NULL) napi_get_reference_value(env, w->self, &recv);
  if (recv == NULL) napi_get_undefined(env, &recv);
  napi_create_int32(env, status < 0 ? 0 : events, &args[0]);
  if (status < 0) {
    /* libuv reports -errno (e.g. EBADF when the fd was closed under the watcher). */
    args[1] = make_errno_error(env, "uv_poll", -status, NULL);
  } else {
    napi_get_undefined(env, &args[1]);
  }
  if (fn != NULL && args[1] != NULL) {
    napi_value result;
    if (napi_make_callback(env, w->async_ctx, recv, fn, 2, args, &result) != napi_ok) {
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value exc;
        napi_get_and_clear_last_exception(env, &exc);
        napi_fatal_exception(env, exc); /* -> process 'uncaughtException' */
      }
    }
  }
  napi_close_handle_scope(env, scope);
}

static watch_t *unwrap_watch(napi_env env, napi_value v) {
  napi_valuetype t;
  bool tagged = false;
  void *w = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_object ||
      napi_check_object_type_tag(env, v, &WATCH_TAG, &tagged) != napi_ok || !tagged ||
      napi_unwrap(env, v, &w) != napi_ok) {
    throw_type(env, "expected a watch handle returned by watchCreate()");
    return NULL;
  }
  return w;
}

static napi_value watch_create(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2, argv);
  int fd;
  napi_valuetype t;
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  NAPI_CALL(env, napi_typeof(env, argv[1], &t));
  if (t != napi_function) return throw_type(env, "callback must be a function");

  uv_loop_t *loop = NULL;
  NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
  watch_t *w = calloc(1, sizeof *w);
  if (w == NULL) return throw_errno(env, "calloc", 12 /* ENOMEM */);
  int rc = uv_poll_init(loop, &w->poll, fd);
  if (rc != 0) {
    free(w);
    return throw_errno(env, "uv_poll_init", -rc);
  }
  w->poll.data = w;
  w->env = env;
  w->js_alive = true;

  napi_value obj, name;
  if (napi_create_object(env, &obj) != napi_ok ||
      napi_wrap(env, obj, w, finalize_watch, NULL, NULL) != napi_ok) {
    w->js_alive = false;
    w->closing = true;
    uv_close((uv_handle_t *)&w->poll, on_uv_closed);
    NAPI_CALL(env, napi_generic_failure);
  }
  /* From here the wrap finalizer owns cleanup if anything below fails. */
  NAPI_CALL(env, napi_type_tag_object(env, obj, &WATCH_TAG));
  NAPI_CALL(env, napi_create_reference(env, argv[1], 1, &w->cb));
  NAPI_CALL(env, napi_create_reference(env, obj, 0, &w->self));
  NAPI_CALL(env, napi_create_string_utf8(env, "gpiofabric:watch", NAPI_AUTO_LENGTH, &name));
  NAPI_CALL(env, napi_async_init(env, obj, name, &w->async_ctx));
  return obj;
}

static napi_value watch_start(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2, argv);
  watch_t *w = unwrap_watch(env, argv[0]);
  uint64_t events;
  if (w == NULL) return NULL;
  if (!arg_u64(env, argv[1], "events", 7, &events)) return NULL;
  if (events == 0) return throw_range(env, "events must not be empty");
  if (w->closing) return throw_errno_detail(env, "uv_poll_start", 9 /* EBADF */, "watch is closed");
  int rc = uv_poll_start(&w->poll, (int)events, on_poll);
  if (rc != 0) return throw_errno(env, "uv_poll_start", -rc);
  if (!w->active) {
    uint32_t count;
    NAPI_CALL(env, napi_reference_ref(env, w->self, &count));
    w->active = true;
  }
  return make_undefined(env);
}

static napi_value watch_stop(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1, argv);
  watch_t *w = unwrap_watch(env, argv[0]);
  if (w == NULL) return NULL;
  if (w->active && !w->closing) {
    uint32_t count;
    int rc = uv_poll_stop(&w->poll);
    if (rc != 0) return throw_errno(env, "uv_poll_stop", -rc);
    w->active = false;
    NAPI_CALL(env, napi_reference_unref(env, w->self, &count));
  }
  return make_undefined(env);
}

static napi_value watch_close(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1, argv);
  watch_t *w = unwrap_watch(env, argv[0]);
  if (w == NULL) return NULL;
  start_close(w, false);
  return make_undefined(env);
}

bool init_watch(napi_env env, napi_value exports) {
  return export_fn(env, exports, "watchCreate", watch_create) &&
         export_fn(env, exports, "watchStart", watch_start) &&
         export_fn(env, exports, "watchStop", watch_stop) &&
         export_fn(env, exports, "watchClose", watch_close);
}
