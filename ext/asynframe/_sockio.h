/* Socket I/O shims for the compiled core: one scatter-gather send and one
 * recv on a raw descriptor, returning -1 with errno set on failure.
 * POSIX uses sendmsg(MSG_NOSIGNAL) (writev for non-sockets such as pipes);
 * Windows uses WSASend/recv and maps WSAEWOULDBLOCK to EAGAIN. */
#ifndef ASYNFRAME_SOCKIO_H
#define ASYNFRAME_SOCKIO_H

#include <errno.h>
#include <stddef.h>

/* each extension that includes this uses only some of the shims */
#if defined(__GNUC__) || defined(__clang__)
#define AF_MAYBE_UNUSED __attribute__((unused))
#else
#define AF_MAYBE_UNUSED
#endif

#ifdef _WIN32
#include <winsock2.h>
typedef struct { void *iov_base; size_t iov_len; } af_iovec;
typedef long long af_ssize_t;

static AF_MAYBE_UNUSED af_ssize_t af_sendv(long long fd, af_iovec *iov, int count) {
    WSABUF bufs[64];
    DWORD sent = 0;
    int i;
    if (count > 64) count = 64;
    for (i = 0; i < count; i++) {
        bufs[i].buf = (char *)iov[i].iov_base;
        bufs[i].len = (ULONG)iov[i].iov_len;
    }
    if (WSASend((SOCKET)fd, bufs, (DWORD)count, &sent, 0, NULL, NULL) != 0) {
        int err = WSAGetLastError();
        errno = (err == WSAEWOULDBLOCK) ? EAGAIN : (err == WSAECONNRESET ? ECONNRESET : EPIPE);
        return -1;
    }
    return (af_ssize_t)sent;
}

static AF_MAYBE_UNUSED af_ssize_t af_recv(long long fd, char *buf, size_t n) {
    int got = recv((SOCKET)fd, buf, (int)n, 0);
    if (got == SOCKET_ERROR) {
        int err = WSAGetLastError();
        errno = (err == WSAEWOULDBLOCK) ? EAGAIN : (err == WSAECONNRESET ? ECONNRESET : EIO);
        return -1;
    }
    return got;
}
#else
#include <string.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0  /* macOS: CPython ignores SIGPIPE anyway */
#endif
typedef struct iovec af_iovec;
typedef ssize_t af_ssize_t;

static AF_MAYBE_UNUSED af_ssize_t af_sendv(long long fd, af_iovec *iov, int count) {
    struct msghdr msg;
    af_ssize_t sent;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = iov;
    msg.msg_iovlen = count;
    do {
        sent = sendmsg((int)fd, &msg, MSG_NOSIGNAL);
        if (sent < 0 && errno == ENOTSOCK)
            sent = writev((int)fd, iov, count);  /* pipes: file_dispatcher */
    } while (sent < 0 && errno == EINTR);
    return sent;
}

static AF_MAYBE_UNUSED af_ssize_t af_recv(long long fd, char *buf, size_t n) {
    af_ssize_t got;
    do {
        got = recv((int)fd, buf, n, 0);
        if (got < 0 && errno == ENOTSOCK)
            got = read((int)fd, buf, n);
    } while (got < 0 && errno == EINTR);
    return got;
}
#endif

#ifndef EWOULDBLOCK
#define EWOULDBLOCK EAGAIN
#endif

#endif
