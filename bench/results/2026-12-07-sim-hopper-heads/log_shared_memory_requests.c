// LD_PRELOAD interposer: appends each cudaFuncSetAttribute call (attr 8: the dynamic shared memory
// a launch requests above 48 KiB; 14: non-portable cluster sizes) to $SHIM_LOG, then forwards it.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
typedef int (*fn_t)(const void*, int, int);
int cudaFuncSetAttribute(const void* func, int attr, int value) {
  static fn_t real = 0;
  if (!real) real = (fn_t)dlsym(RTLD_NEXT, "cudaFuncSetAttribute");
  const char* path = getenv("SHIM_LOG");
  FILE* f = fopen(path ? path : "/tmp/shim.log", "a");
  if (f) { fprintf(f, "cudaFuncSetAttribute func=%p attr=%d value=%d\n", func, attr, value); fclose(f); }
  return real(func, attr, value);
}
