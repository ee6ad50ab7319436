/* LD_PRELOAD shim for tests: fsync/fdatasync fail with EIO while a flag file exists.
 *
 * FAULTY_SYNC_FLAG=/path/to/flag   while this file exists, a sync of a file whose path contains
 * FAULTY_SYNC_MATCH (default "-wal") returns -1 with errno EIO, as a dying disk or a lost
 * network volume makes the kernel report it. Everything else is passed to libc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failing(int fd) {
    const char *flag = getenv("FAULTY_SYNC_FLAG");
    if (flag == NULL || access(flag, F_OK) != 0) return 0;
    const char *match = getenv("FAULTY_SYNC_MATCH");
    if (match == NULL) match = "-wal";
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return 0;
    path[n] = '\0';
    return strstr(path, match) != NULL;
}

int fsync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (failing(fd)) { errno = EIO; return -1; }
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (failing(fd)) { errno = EIO; return -1; }
    return real(fd);
}
