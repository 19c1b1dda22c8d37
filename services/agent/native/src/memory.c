/*
 * Shared memory: mmap of an fd as a zero-copy ArrayBuffer, memfd_create, memory fence.
 *
 *   mmap(fd, length, offset) -> ArrayBuffer   MAP_SHARED, PROT_READ|PROT_WRITE; for regular
 *                                             files (memfd) the range must lie inside the file
 *   unmap(arrayBuffer) -> boolean             detach + munmap now; false if already unmapped
 *   memfd(name, size) -> fd                   memfd_create(MFD_CLOEXEC) + ftruncate
 *   fence()                                   __atomic_thread_fence(__ATOMIC_SEQ_CST)
 *
 * Lifetime of a mapping: one `region` struct per mmap, shared by two owners that each
 * hold a reference count:
 *   1. the ArrayBuffer's backing store, whose finalizer runs when the buffer is garbage
 *      collected or after it has been detached (N-API runs it on the JS thread);
 *   2. the napi_wrap on the ArrayBuffer, through which unmap() finds the region.
 * Whoever comes first munmaps (exactly once, guarded by `mapped`); the last one frees the
 * struct. unmap() detaches the ArrayBuffer *before* munmap so no JS view can touch the
 * range afterwards (byteLength becomes 0).
 */
#include "native.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
  void *addr;
  size_t length;
  bool mapped;
  int refs;
} region;

static const napi_type_tag REGION_TAG = {0x6770696f66616272ULL, 0x6d6d61707265676eULL};

static void region_release(region *r) {
  if (--r->refs > 0) return;
  if (r->mapped) munmap(r->addr, r->length);
  free(r);
}

static void region_unmap(region *r) {
  if (!r->mapped) return;
  r->mapped = false;
  munmap(r->addr, r->length); /* cannot fail for a range we mapped ourselves */
}

/* Backing-store finalizer: the buffer is gone (GC) or was detached. */
static void finalize_backing(napi_env env, void *data, void *hint) {
  region *r = hint;
  region_unmap(r);
  region_release(r);
}

/* napi_wrap finalizer: the ArrayBuffer object itself was collected. */
static void finalize_wrap(napi_env env, void *data, void *hint) { region_release(data); }

static napi_value do_mmap(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3, argv);
  int fd;
  uint64_t length, offset;
  long page = sysconf(_SC_PAGESIZE);
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  /* Bounded by what one ArrayBuffer may hold in this Node; map bigger regions in parts. */
  if (!arg_u64(env, argv[1], "length", (uint64_t)1 << 32, &length)) return NULL;
  if (!arg_u64(env, argv[2], "offset", 9007199254740991ULL, &offset)) return NULL;
  if (length == 0) return throw_range(env, "length must be > 0");
  if (page <= 0 || offset % (uint64_t)page != 0)
    return throw_range(env, "offset must be a multiple of the page size");

  /* For files with a size (memfd, hugetlbfs, tmpfs) refuse ranges past the end: touching
   * such pages would raise SIGBUS instead of an error. */
  struct stat st;
  if (fstat(fd, &st) != 0) return throw_errno(env, "fstat", errno);
  if (S_ISREG(st.st_mode) && (offset > (uint64_t)st.st_size || length > (uint64_t)st.st_size - offset)) {
    char detail[160];
    snprintf(detail, sizeof detail, "range [%llu, +%llu) is beyond the end of the file (%lld bytes)",
             (unsigned long long)offset, (unsigned long long)length, (long long)st.st_size);
    return throw_errno_detail(env, "mmap", EINVAL, detail);
  }

  region *r = calloc(1, sizeof *r);
  if (r == NULL) return throw_errno(env, "calloc", ENOMEM);
  void *addr = mmap(NULL, (size_t)length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)offset);
  if (addr == MAP_FAILED) {
    int err = errno;
    free(r);
    return throw_errno(env, "mmap", err);
  }
  r->addr = addr;
  r->length = (size_t)length;
  r->mapped = true;
  r->refs = 1; /* the backing store's */

  napi_value ab;
  if (napi_create_external_arraybuffer(env, addr, (size_t)length, finalize_backing, r, &ab) !=
      napi_ok) {
    region_unmap(r);
    free(r);
    NAPI_CALL(env, napi_generic_failure);
  }
  /* From here the backing store owns one reference; the wrap takes the second. */
  r->refs++;
  if (napi_wrap(env, ab, r, finalize_wrap, NULL, NULL) != napi_ok) {
    r->refs--;
    NAPI_CALL(env, napi_generic_failure);
  }
  NAPI_CALL(env, napi_type_tag_object(env, ab, &REGION_TAG));
  return ab;
}

static napi_value do_unmap(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1, argv);
  bool is_ab = false, tagged = false;
  napi_value result;
  NAPI_CALL(env, napi_is_arraybuffer(env, argv[0], &is_ab));
  if (is_ab) NAPI_CALL(env, napi_check_object_type_tag(env, argv[0], &REGION_TAG, &tagged));
  if (!is_ab || !tagged) return throw_type(env, "unmap expects an ArrayBuffer returned by mmap()");
  region *r = NULL;
  NAPI_CALL(env, napi_unwrap(env, argv[0], (void **)&r));
  bool was_mapped = r->mapped;
  if (was_mapped) {
    bool detached = false;
    NAPI_CALL(env, napi_is_detached_arraybuffer(env, argv[0], &detached));
    if (!detached) NAPI_CALL(env, napi_detach_arraybuffer(env, argv[0]));
    region_unmap(r);
  }
  NAPI_CALL(env, napi_get_boolean(env, was_mapped, &result));
  return result;
}

static napi_value do_memfd(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2, argv);
  char name[250];
  uint64_t size;
  if (!arg_string(env, argv[0], "name", name, sizeof name)) return NULL;
  if (!arg_u64(env, argv[1], "size", 9007199254740991ULL, &size)) return NULL;
  int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return throw_errno(env, "memfd_create", errno);
  if (ftruncate(fd, (off_t)size) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "ftruncate", err);
  }
  return make_int(env, fd);
}

static napi_value do_fence(napi_env env, napi_callback_info info) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return make_undefined(env);
}

static napi_value page_size(napi_env env, napi_callback_info info) {
  long page = sysconf(_SC_PAGESIZE);
  if (page <= 0) return throw_errno(env, "sysconf(_SC_PAGESIZE)", errno ? errno : EINVAL);
  return make_int(env, page);
}

bool init_memory(napi_env env, napi_value exports) {
  return export_fn(env, exports, "mmap", do_mmap) && export_fn(env, exports, "unmap", do_unmap) &&
         export_fn(env, exports, "memfd", do_memfd) && export_fn(env, exports, "fence", do_fence) &&
         export_fn(env, exports, "pageSize", page_size);
}
