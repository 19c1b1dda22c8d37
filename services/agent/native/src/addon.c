/*
 * gpiofabric_native: the device agent's OS plumbing (see docs/native.md).
 * Each source file registers its part of the exports.
 */
#include "native.h"

NAPI_MODULE_INIT() {
  if (!init_errors(env, exports) || !init_socket(env, exports) || !init_memory(env, exports) ||
      !init_eventfd(env, exports) || !init_watch(env, exports)) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_error(env, NULL, "gpiofabric_native: initialisation failed");
    return NULL;
  }
  return exports;
}
