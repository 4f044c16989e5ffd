/* The floor of one keep-alive connection on this host: a server that does nothing but answer.

   One blocking socket, no event loop: read until the request head's empty line, write a fixed 200 answer of the
   size a probe's is, repeat. What a keep-alive probe costs beyond this (bench/probe_floor.py runs the same client
   against it and against the gateway) is the server's own; what this costs is the kernel's and the host's
   (loopback TCP, waking the other side, the scheduler placing client and server).

   usage: probe_floor PORT   (serves one connection at a time, forever) */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char ANSWER[] =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 27\r\n"
    "Cache-Control: no-store\r\nDate: Sun, 06 Dec 2026 00:00:00 GMT\r\n\r\n{\"ok\":true,\"status\":\"live\"}";

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: probe_floor PORT\n");
        return 2;
    }
    int one = 1, srv = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(srv, (struct sockaddr *)&a, sizeof a) < 0 || listen(srv, 16) < 0) {
        perror("bind");
        return 2;
    }
    static char buf[65536];
    for (;;) {
        int fd = accept(srv, NULL, NULL);
        if (fd < 0)
            continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        size_t have = 0;
        for (;;) {
            ssize_t n = read(fd, buf + have, sizeof buf - have - 1);
            if (n <= 0)
                break;
            have += (size_t)n;
            buf[have] = 0;
            char *end;
            while ((end = strstr(buf, "\r\n\r\n")) != NULL) {
                if (write(fd, ANSWER, sizeof ANSWER - 1) < 0)
                    break;
                size_t used = (size_t)(end + 4 - buf);
                memmove(buf, buf + used, have - used + 1);
                have -= used;
            }
            if (have == sizeof buf - 1)
                break;
        }
        close(fd);
    }
}
