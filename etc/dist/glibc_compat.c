/* glibc_compat.c - the shared-hosting build (make dist) only: keeps the
 * programs' glibc floor where it was before SQLite was linked in. The static
 * SQLite from Debian 11 calls fcntl64 (glibc 2.28) and log (2.29's version);
 * linked with --wrap, those calls go to the same functions under their
 * x86_64 base versions, which every glibc since 2.2.5 has. On x86_64,
 * fcntl's off_t is 64 bits already: fcntl and fcntl64 are one call. */
/* SPDX-License-Identifier: MIT */
#include <stdarg.h>

int fcntl_base(int fd, int cmd, ...);
double log_base(double x);
int __wrap_fcntl64(int fd, int cmd, ...);
double __wrap_log(double x);

__asm__(".symver fcntl_base,fcntl@GLIBC_2.2.5");
__asm__(".symver log_base,log@GLIBC_2.2.5");

int __wrap_fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *); /* an int or a pointer: one register either way */
    va_end(ap);
    return fcntl_base(fd, cmd, arg);
}

double __wrap_log(double x)
{
    return log_base(x);
}
