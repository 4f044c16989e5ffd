/* A compiled keep-alive probe client for bench/gateway.py: one blocking socket, one request at a time.

   The Python client thread costs about 30 us per round trip, more than the server's own work on a probe, so
   its rate says more about the client than the gateway. This one writes the request, reads the whole answer
   (head, then Content-Length bytes of body unless HEAD), and times each round trip with clock_gettime.

   usage: probe_client PORT METHOD PATH SECONDS
   stdout: one line "n wall_ns reconnects status:count,..." then one latency (ns) per line. */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 50
#define BUF 65536

static char buf[BUF];
static size_t have;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("connect");
        exit(2);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    have = 0;
    return fd;
}

static void fill(int fd) {
    if (have == BUF) {
        fprintf(stderr, "answer larger than %d bytes\n", BUF);
        exit(2);
    }
    ssize_t n = read(fd, buf + have, BUF - have);
    if (n <= 0) {
        fprintf(stderr, "connection closed mid-answer\n");
        exit(2);
    }
    have += (size_t)n;
}

static const char *field(const char *head, size_t len, const char *name) {
    size_t nl = strlen(name);
    for (const char *p = head; p && p < head + len; p = memchr(p, '\n', head + len - p)) {
        if (*p == '\n')
            p++;
        if ((size_t)(head + len - p) > nl && strncasecmp(p, name, nl) == 0)
            return p + nl;
    }
    return NULL;
}

/* Read one answer; its status; *closes when it says Connection: close. Extra bytes stay in buf. */
static int answer(int fd, int head_only, int *closes) {
    char *end;
    while (!(end = memmem(buf, have, "\r\n\r\n", 4)))
        fill(fd);
    size_t head_len = (size_t)(end - buf) + 4;
    int status = atoi(buf + 9);
    const char *cl = field(buf, head_len, "content-length:");
    const char *conn = field(buf, head_len, "connection:");
    size_t body = (!head_only && cl) ? strtoul(cl, NULL, 10) : 0;
    *closes = conn && strncasecmp(conn + strspn(conn, " "), "close", 5) == 0;
    while (have < head_len + body)
        fill(fd);
    memmove(buf, buf + head_len + body, have - head_len - body);
    have -= head_len + body;
    return status;
}

static void send_all(int fd, const char *req, size_t len) {
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, req + off, len - off);
        if (n <= 0) {
            perror("write");
            exit(2);
        }
        off += (size_t)n;
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s PORT METHOD PATH SECONDS\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]), head_only = strcmp(argv[2], "HEAD") == 0, closes, reconnects = 0;
    char req[1024];
    int len = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: ocsb-probe-c\r\n"
                       "Accept: */*\r\n\r\n", argv[2], argv[3], port);
    long long span = (long long)(atof(argv[4]) * 1e9);
    size_t cap = 1 << 20, n = 0;
    long long *lat = malloc(cap * sizeof *lat);
    int statuses[600] = {0};
    int fd = dial(port);
    for (int i = 0; i < WARMUP; i++) {
        send_all(fd, req, (size_t)len);
        answer(fd, head_only, &closes);
        if (closes) {
            close(fd);
            fd = dial(port);
        }
    }
    long long t_all = now_ns(), t_end = t_all + span, t;
    while ((t = now_ns()) < t_end) {
        send_all(fd, req, (size_t)len);
        int status = answer(fd, head_only, &closes);
        if (n == cap)
            lat = realloc(lat, (cap *= 2) * sizeof *lat);
        lat[n++] = now_ns() - t;
        statuses[status >= 0 && status < 600 ? status : 0]++;
        if (closes) {
            reconnects++;
            close(fd);
            fd = dial(port);
        }
    }
    long long wall = now_ns() - t_all;
    close(fd);
    printf("%zu %lld %d ", n, wall, reconnects);
    for (int s = 0, first = 1; s < 600; s++)
        if (statuses[s]) {
            printf("%s%d:%d", first ? "" : ",", s, statuses[s]);
            first = 0;
        }
    printf("\n");
    for (size_t i = 0; i < n; i++)
        printf("%lld\n", lat[i]);
    return 0;
}
