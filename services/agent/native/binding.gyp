# The agent's OS plumbing addon: UNIX sockets with SCM_RIGHTS, mmap, eventfd, and a
# libuv poll watcher. Plain C on N-API (node_api.h) + uv.h; no NAN, no node-addon-api.
# Built offline by scripts/build-addon.mjs (node-gyp --nodedir=<running node's headers>).
{
  "targets": [
    {
      "target_name": "gpiofabric_native",
      "sources": [
        "src/addon.c",
        "src/errors.c",
        "src/socket.c",
        "src/memory.c",
        "src/eventfd.c",
        "src/watch.c"
      ],
      "defines": ["_GNU_SOURCE", "NAPI_VERSION=8"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "cflags!": ["-fno-exceptions"]
    }
  ]
}
