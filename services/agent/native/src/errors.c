/*
 * Errors and argument parsing.
 *
 * JS may register an Error subclass with setErrorClass(Ctor); errno failures are then
 * created with `new Ctor(message, code, errno, syscall)` so TypeScript gets a typed error.
 */
#include "native.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  napi_ref error_class; /* strong ref to the registered class, or NULL */
} addon_data;

static void free_addon_data(napi_env env, void *data, void *hint) {
  addon_data *d = data;
  if (d->error_class != NULL) napi_delete_reference(env, d->error_class);
  free(d);
}

static addon_data *get_data(napi_env env) {
  void *d = NULL;
  if (napi_get_instance_data(env, &d) != napi_ok) return NULL;
  return d;
}

static const char *errno_name(int err) {
  const char *name = strerrorname_np(err); /* glibc >= 2.32 */
  return name != NULL ? name : "EUNKNOWN";
}

napi_value make_errno_error(napi_env env, const char *syscall, int err, const char *detail) {
  char msg[512];
  const char *name = errno_name(err);
  if (detail != NULL)
    snprintf(msg, sizeof msg, "%s: %s (%s): %s", syscall, name, strerror(err), detail);
  else
    snprintf(msg, sizeof msg, "%s: %s (%s)", syscall, name, strerror(err));

  napi_value js_msg, js_code, js_errno, js_syscall, error = NULL;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &js_msg) != napi_ok ||
      napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &js_code) != napi_ok ||
      napi_create_int32(env, err, &js_errno) != napi_ok ||
      napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &js_syscall) != napi_ok)
    return NULL;

  addon_data *d = get_data(env);
  napi_value ctor = NULL;
  if (d != NULL && d->error_class != NULL &&
      napi_get_reference_value(env, d->error_class, &ctor) == napi_ok && ctor != NULL) {
    napi_value args[4] = {js_msg, js_code, js_errno, js_syscall};
    if (napi_new_instance(env, ctor, 4, args, &error) == napi_ok) return error;
    /* The constructor threw: fall back to a plain Error below. */
    napi_value ignored;
    napi_get_and_clear_last_exception(env, &ignored);
  }
  if (napi_create_error(env, js_code, js_msg, &error) != napi_ok) return NULL;
  napi_set_named_property(env, error, "errno", js_errno);
  napi_set_named_property(env, error, "syscall", js_syscall);
  return error;
}

napi_value throw_errno_detail(napi_env env, const char *syscall, int err, const char *detail) {
  napi_value error = make_errno_error(env, syscall, err, detail);
  if (error != NULL) napi_throw(env, error);
  else napi_throw_error(env, NULL, syscall);
  return NULL;
}

napi_value throw_errno(napi_env env, const char *syscall, int err) {
  return throw_errno_detail(env, syscall, err, NULL);
}

napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

napi_value throw_range(napi_env env, const char *msg) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

napi_value make_int(napi_env env, int64_t v) {
  napi_value r = NULL;
  napi_create_int64(env, v, &r);
  return r;
}

napi_value make_undefined(napi_env env) {
  napi_value r = NULL;
  napi_get_undefined(env, &r);
  return r;
}

/* A number that is an integer in [0, INT_MAX]. */
bool arg_fd(napi_env env, napi_value v, const char *what, int *out) {
  char msg[128];
  napi_valuetype t;
  double d;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number ||
      napi_get_value_double(env, v, &d) != napi_ok) {
    snprintf(msg, sizeof msg, "%s must be a file descriptor (a number)", what);
    throw_type(env, msg);
    return false;
  }
  if (!(d >= 0 && d <= INT_MAX) || d != (double)(int)d) {
    snprintf(msg, sizeof msg, "%s must be an integer file descriptor >= 0", what);
    throw_range(env, msg);
    return false;
  }
  *out = (int)d;
  return true;
}

/* A non-negative integer number (<= 2^53-1 and <= max) or a bigint (<= max). */
bool arg_u64(napi_env env, napi_value v, const char *what, uint64_t max, uint64_t *out) {
  char msg[160];
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  if (t == napi_number) {
    double d;
    if (napi_get_value_double(env, v, &d) != napi_ok) return false;
    if (!(d >= 0 && d <= 9007199254740991.0) || d != (double)(uint64_t)d ||
        (uint64_t)d > max) {
      snprintf(msg, sizeof msg, "%s must be an integer in [0, %llu]", what,
               (unsigned long long)(max < 9007199254740991ULL ? max : 9007199254740991ULL));
      throw_range(env, msg);
      return false;
    }
    *out = (uint64_t)d;
    return true;
  }
  if (t == napi_bigint) {
    bool lossless = false;
    uint64_t u;
    if (napi_get_value_bigint_uint64(env, v, &u, &lossless) != napi_ok) return false;
    if (!lossless || u > max) {
      snprintf(msg, sizeof msg, "%s must be in [0, %llu]", what, (unsigned long long)max);
      throw_range(env, msg);
      return false;
    }
    *out = u;
    return true;
  }
  snprintf(msg, sizeof msg, "%s must be a number or bigint", what);
  throw_type(env, msg);
  return false;
}

/* A string that fits in `cap` bytes including the NUL, without embedded NULs. */
bool arg_string(napi_env env, napi_value v, const char *what, char *buf, size_t cap) {
  char msg[160];
  napi_valuetype t;
  size_t len = 0;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) {
    snprintf(msg, sizeof msg, "%s must be a string", what);
    throw_type(env, msg);
    return false;
  }
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return false;
  if (len + 1 > cap) {
    snprintf(msg, sizeof msg, "%s is too long (%zu bytes, at most %zu)", what, len, cap - 1);
    throw_range(env, msg);
    return false;
  }
  if (napi_get_value_string_utf8(env, v, buf, cap, &len) != napi_ok) return false;
  if (strlen(buf) != len) {
    snprintf(msg, sizeof msg, "%s must not contain NUL characters", what);
    throw_type(env, msg);
    return false;
  }
  return true;
}

bool export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  return napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) == napi_ok &&
         napi_set_named_property(env, exports, name, fn) == napi_ok;
}

/* setErrorClass(Ctor): errno failures are created with `new Ctor(msg, code, errno, syscall)`. */
static napi_value set_error_class(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1, argv);
  napi_valuetype t;
  NAPI_CALL(env, napi_typeof(env, argv[0], &t));
  if (t != napi_function) return throw_type(env, "setErrorClass expects a constructor");
  addon_data *d = get_data(env);
  if (d == NULL) return throw_type(env, "addon instance data missing");
  if (d->error_class != NULL) napi_delete_reference(env, d->error_class);
  d->error_class = NULL;
  NAPI_CALL(env, napi_create_reference(env, argv[0], 1, &d->error_class));
  return make_undefined(env);
}

bool init_errors(napi_env env, napi_value exports) {
  addon_data *d = calloc(1, sizeof *d);
  if (d == NULL) return false;
  if (napi_set_instance_data(env, d, free_addon_data, NULL) != napi_ok) {
    free(d);
    return false;
  }
  return export_fn(env, exports, "setErrorClass", set_error_class);
}
