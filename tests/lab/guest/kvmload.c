/*
 * kvmload: the workload generator that runs inside kvmtop lab guests.
 *
 * One process per workload spec, started by the initramfs /init:
 *
 *   kvmload cpu:loops=1,duty=40[,period=100][,ctl=7000]
 *   kvmload memleak:rate=8[,step=128][,max=48][,ctl=7001]
 *   kvmload disk:mode=rw,iops=200,bs=4096[,dev=/dev/vda]
 *   kvmload net:dst=10.213.1.12,port=9000,pps=20000,size=1000[,batch=50][,mac=M]
 *   kvmload netpeer:port=9000[,batch=50][,ctl=7000]
 *   kvmload idle
 *
 * cpu      `loops` busy processes, each busy `duty` % of every `period` ms
 *          (wall clock).  With `ctl=PORT` it listens on UDP PORT for
 *          "duty=N" datagrams and changes the duty cycle of all loops.
 * memleak  allocates and touches `rate` MiB per minute in `step` KiB chunks
 *          and never frees them; after `max` MiB (0 = never) it frees all
 *          and starts again, so a long-running lab does not end in the OOM
 *          killer.  With `ctl=PORT` a "restart" datagram on UDP PORT frees
 *          all and starts leaking from zero at once (a known start time).
 * disk     O_DIRECT reads (`mode=r`), writes (`w`) or both alternately
 *          (`rw`) of `bs` bytes at random aligned offsets, `iops` per second
 *          (0 = as fast as possible).
 * net      UDP datagrams with `size` bytes of payload to dst:port at `pps`
 *          per second (0 = as fast as possible), sent in bursts every
 *          `batch` ms.  `mac=M`: a permanent ARP entry dst -> M first.
 * netpeer  UDP sink on `port`: drains the socket, then sleeps `batch` ms.
 *          With `ctl=PORT` a "stall=N" datagram takes eth0 down for N s: the
 *          guest stops draining its RX ring (a guest-local drop at its tap).
 *
 * Wake-ups are what a TCG guest pays for (about 1 ms of host CPU each on
 * the reference machine), so net and netpeer work in batches.
 *
 * Every workload prints one line when it starts, and net/netpeer/memleak
 * print a progress line now and then.  Keep this one small file: it is
 * built with `gcc -static -O2` on the host.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

#define MAXP 16

static const char *keys[MAXP];
static const char *vals[MAXP];
static int nparams;
static const char *kind;

static void die(const char *what)
{
    fprintf(stdout, "kvmload %s: %s: %s\n", kind, what, strerror(errno));
    exit(1);
}

/* Split "kind:k=v,k=v" in place. */
static void parse(char *spec)
{
    char *p = strchr(spec, ':');
    kind = spec;
    if (!p)
        return;
    *p++ = '\0';
    while (p && *p && nparams < MAXP) {
        char *next = strchr(p, ',');
        char *eq;
        if (next)
            *next++ = '\0';
        eq = strchr(p, '=');
        if (eq) {
            *eq = '\0';
            keys[nparams] = p;
            vals[nparams] = eq + 1;
            nparams++;
        }
        p = next;
    }
}

static const char *sparam(const char *key, const char *def)
{
    for (int i = 0; i < nparams; i++)
        if (strcmp(keys[i], key) == 0)
            return vals[i];
    return def;
}

static double dparam(const char *key, double def)
{
    const char *v = sparam(key, NULL);
    return v ? atof(v) : def;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_until(double t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* ---- cpu ---------------------------------------------------------------- */

static int udp_bind(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0)
        die("socket");
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0)
        die("bind");
    return s;
}

/* Block until a control datagram "<prefix>N" arrives on s; return N. */
static int ctl_wait(int s, const char *prefix)
{
    char buf[64];
    size_t len = strlen(prefix);
    for (;;) {
        ssize_t n = recv(s, buf, sizeof buf - 1, 0);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        if (strncmp(buf, prefix, len) == 0)
            return atoi(buf + len);
    }
}

static void cpu_loop(volatile int *duty, double period)
{
    volatile uint64_t sink = 0;
    double next = now();
    for (;;) {
        double busy_until = next + period * (*duty) / 100.0;
        while (now() < busy_until)
            for (int i = 0; i < 10000; i++)
                sink += i;
        next += period;
        if (next < now()) /* fell behind (e.g. descheduled): do not catch up */
            next = now();
        sleep_until(next);
    }
}

static void run_cpu(void)
{
    int loops = (int)dparam("loops", 1);
    double period = dparam("period", 100) / 1000.0;
    int ctl = (int)dparam("ctl", 0);
    volatile int *duty = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (duty == MAP_FAILED)
        die("mmap");
    *duty = (int)dparam("duty", 100);
    printf("kvmload cpu: loops=%d duty=%d period=%.0fms ctl=%d\n", loops, *duty,
           period * 1000, ctl);
    fflush(stdout);
    for (int i = 0; i < loops; i++)
        if (fork() == 0)
            cpu_loop(duty, period);
    if (ctl > 0) {
        int s = udp_bind(ctl);
        for (;;) {
            int d = ctl_wait(s, "duty=");
            if (d < 0)
                d = 0;
            if (d > 100)
                d = 100;
            if (d != *duty) {
                *duty = d;
                printf("kvmload cpu: duty=%d\n", d);
                fflush(stdout);
            }
        }
    }
    while (wait(NULL) > 0)
        ;
}

/* ---- memleak ------------------------------------------------------------ */

static void *leak_chunks[65536];
static size_t leak_nchunks;

/* Give back every chunk held so far. */
static void leak_free(size_t step)
{
    for (size_t i = 0; i < leak_nchunks; i++)
        munmap(leak_chunks[i], step);
    leak_nchunks = 0;
}

static void run_memleak(void)
{
    double rate = dparam("rate", 8) * 1048576.0 / 60.0; /* bytes per second */
    size_t step = (size_t)dparam("step", 128) * 1024;
    double max = dparam("max", 48) * 1048576.0;
    int ctl = (int)dparam("ctl", 0);
    int s = ctl > 0 ? udp_bind(ctl) : -1;
    double t0 = now(), held = 0, next_report = 4 * 1048576.0;
    printf("kvmload memleak: rate=%.0f B/s step=%zu max=%.0f ctl=%d\n", rate, step, max, ctl);
    fflush(stdout);
    for (;;) {
        double due = rate * (now() - t0);
        while (held + step <= due) {
            char *p;
            if (max > 0 && held + step > max) {
                leak_free(step);
                printf("kvmload memleak: reached %.0f MiB, freeing and starting over\n",
                       held / 1048576.0);
                fflush(stdout);
                held = 0;
                t0 = now();
                due = 0;
                next_report = 4 * 1048576.0;
                break;
            }
            p = mmap(NULL, step, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                die("mmap");
            memset(p, 0x5a, step);
            if (leak_nchunks < sizeof leak_chunks / sizeof leak_chunks[0])
                leak_chunks[leak_nchunks++] = p;
            held += step;
            if (held >= next_report) {
                printf("kvmload memleak: %.0f MiB\n", held / 1048576.0);
                fflush(stdout);
                next_report += 4 * 1048576.0;
            }
        }
        if (s < 0) {
            sleep_until(t0 + (held + step) / rate);
            continue;
        }
        /* With `ctl=PORT`: wait for the next chunk or a "restart" datagram,
         * which frees everything and starts leaking from zero now. */
        double wait = t0 + (held + step) / rate - now();
        struct timeval tv = {0, 0};
        char buf[64];
        ssize_t n;
        if (wait > 0) {
            tv.tv_sec = (time_t)wait;
            tv.tv_usec = (suseconds_t)((wait - (double)tv.tv_sec) * 1e6) + 1;
        } else {
            tv.tv_usec = 1;
        }
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        n = recv(s, buf, sizeof buf - 1, 0);
        if (n > 0) {
            buf[n] = '\0';
            if (strncmp(buf, "restart", 7) == 0) {
                leak_free(step);
                printf("kvmload memleak: restart (held %.0f MiB)\n", held / 1048576.0);
                fflush(stdout);
                held = 0;
                t0 = now();
                next_report = 4 * 1048576.0;
            }
        }
    }
}

/* ---- disk --------------------------------------------------------------- */

static void run_disk(void)
{
    const char *dev = sparam("dev", "/dev/vda");
    const char *mode = sparam("mode", "rw");
    double iops = dparam("iops", 200);
    size_t bs = (size_t)dparam("bs", 4096);
    int rd = strchr(mode, 'r') != NULL, wr = strchr(mode, 'w') != NULL;
    uint64_t size = 0, blocks, x = 88172645463325252ULL;
    void *buf;
    double t0, interval = iops > 0 ? 1.0 / iops : 0;
    long long n = 0;
    int fd = open(dev, (wr ? O_RDWR : O_RDONLY) | O_DIRECT);
    if (fd < 0)
        die(dev);
    if (ioctl(fd, BLKGETSIZE64, &size) < 0)
        die("BLKGETSIZE64");
    if (posix_memalign(&buf, 4096, bs))
        die("posix_memalign");
    memset(buf, 0xa5, bs);
    blocks = size / bs;
    printf("kvmload disk: dev=%s mode=%s iops=%.0f bs=%zu blocks=%llu\n", dev, mode, iops,
           bs, (unsigned long long)blocks);
    fflush(stdout);
    t0 = now();
    for (;;) {
        off_t off;
        int do_write;
        x ^= x << 13; /* xorshift64: random aligned offsets */
        x ^= x >> 7;
        x ^= x << 17;
        off = (off_t)(x % blocks) * bs;
        do_write = wr && (!rd || (n & 1));
        if ((do_write ? pwrite(fd, buf, bs, off) : pread(fd, buf, bs, off)) < 0)
            die(do_write ? "pwrite" : "pread");
        n++;
        if (interval > 0) {
            if (now() > t0 + n * interval + 0.1) /* >100 ms behind: no catch-up burst */
                t0 = now() - n * interval;
            sleep_until(t0 + n * interval);
        }
    }
}

/* ---- net ---------------------------------------------------------------- */

/* A permanent ARP entry for dst: the flow goes on at its rate while the
 * receiver cannot answer ARP (its eth0 down: `lab fault stall`), so the
 * drops land at the receiver's tap instead of in this guest's neighbour
 * table (net/ipv4/arp.c: SIOCSARP with ATF_PERM). */
static void static_arp(const struct sockaddr_in *dst, const char *mac)
{
    struct arpreq req;
    unsigned int b[6];
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    memset(&req, 0, sizeof req);
    memcpy(&req.arp_pa, dst, sizeof *dst);
    if (sscanf(mac, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6) {
        printf("kvmload net: bad mac %s\n", mac);
        exit(1);
    }
    req.arp_ha.sa_family = ARPHRD_ETHER;
    for (int i = 0; i < 6; i++)
        req.arp_ha.sa_data[i] = (char)b[i];
    req.arp_flags = ATF_PERM | ATF_COM;
    strncpy(req.arp_dev, "eth0", sizeof req.arp_dev - 1);
    if (s < 0 || ioctl(s, SIOCSARP, &req) < 0)
        die("SIOCSARP");
    close(s);
}

static void run_net(void)
{
    const char *dst = sparam("dst", "10.213.1.12");
    const char *mac = sparam("mac", NULL);
    int port = (int)dparam("port", 9000);
    double pps = dparam("pps", 1000);
    size_t size = (size_t)dparam("size", 1000);
    double batch = dparam("batch", 50) / 1000.0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    char *buf = calloc(1, size ? size : 1);
    long long sent = 0, sched = 0, errs = 0;
    double t0, next_report;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0)
        die("socket");
    if (inet_pton(AF_INET, dst, &a.sin_addr) != 1) {
        printf("kvmload net: bad dst %s\n", dst);
        exit(1);
    }
    if (mac)
        static_arp(&a, mac);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0)
        die("connect");
    printf("kvmload net: dst=%s port=%d pps=%.0f size=%zu\n", dst, port, pps, size);
    fflush(stdout);
    t0 = now();
    next_report = t0 + 30;
    for (;;) {
        double t = now();
        long long due = pps > 0 ? (long long)(pps * (t - t0)) : sched + 64;
        /* More than 100 ms behind (send blocked on a full queue, vCPU not
         * scheduled): forget the debt instead of bursting to catch up. */
        if (pps > 0 && due - sched > pps / 10 + 1)
            sched = due - (long long)(pps / 10) - 1;
        while (sched < due) {
            /* ECONNREFUSED (ICMP port unreachable), ENOBUFS: count, go on */
            if (send(s, buf, size, 0) < 0)
                errs++;
            sched++;
            sent++;
        }
        if (t >= next_report) {
            printf("kvmload net: sent=%lld errors=%lld\n", sent, errs);
            fflush(stdout);
            next_report += 30;
        }
        /* Send in bursts at most every `batch` ms: each wake-up is
         * expensive for a TCG guest. */
        if (pps > 0) {
            double next = t0 + (sched + 1) / pps;
            sleep_until(next > t + batch ? next : t + batch);
        }
    }
}

/* Bring eth0 down (up = 0) or up: while it is down the guest's virtio-net
 * driver stops taking packets off its RX ring (NAPI disabled, Linux
 * drivers/net/virtio_net.c virtnet_close), QEMU stops reading the tap once
 * the ring is full, and the tap's own queue overflows into tx_dropped. */
static void link_up(int up)
{
    struct ifreq ifr;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        die("SIOCGIFFLAGS");
    if (up)
        ifr.ifr_flags |= IFF_UP;
    else
        ifr.ifr_flags &= ~IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        die("SIOCSIFFLAGS");
    close(s);
}

/* netpeer `ctl=PORT`: "stall=N" stops draining eth0 for N seconds. */
static void netpeer_ctl(int port)
{
    int s = udp_bind(port);
    char buf[64];
    for (;;) {
        int secs = ctl_wait(s, "stall=");
        if (secs <= 0 || secs > 600)
            continue;
        printf("kvmload netpeer: eth0 down for %d s\n", secs);
        fflush(stdout);
        link_up(0);
        sleep_until(now() + secs);
        link_up(1);
        printf("kvmload netpeer: eth0 up\n");
        fflush(stdout);
        /* `lab fault` sends each datagram three times: drop the repeats. */
        while (recv(s, buf, sizeof buf, MSG_DONTWAIT) > 0)
            ;
    }
}

static void run_netpeer(void)
{
    int port = (int)dparam("port", 9000);
    double batch = dparam("batch", 50) / 1000.0;
    int ctl = (int)dparam("ctl", 0);
    int s = udp_bind(port);
    static char buf[65536];
    long long got = 0, bytes = 0;
    double next_report = now() + 30;
    int rcvbuf = 4 << 20;
    if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    printf("kvmload netpeer: port=%d batch=%.0fms ctl=%d\n", port, batch * 1000, ctl);
    fflush(stdout);
    if (ctl > 0 && fork() == 0)
        netpeer_ctl(ctl);
    for (;;) {
        ssize_t n = recv(s, buf, sizeof buf, 0); /* block for the first one */
        while (n > 0) {
            got++;
            bytes += n;
            n = recv(s, buf, sizeof buf, MSG_DONTWAIT);
        }
        if (now() >= next_report) {
            printf("kvmload netpeer: received=%lld bytes=%lld\n", got, bytes);
            fflush(stdout);
            next_report += 30;
        }
        if (batch > 0)
            sleep_until(now() + batch);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: kvmload KIND[:key=value,...]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    parse(argv[1]);
    if (strcmp(kind, "cpu") == 0)
        run_cpu();
    else if (strcmp(kind, "memleak") == 0)
        run_memleak();
    else if (strcmp(kind, "disk") == 0)
        run_disk();
    else if (strcmp(kind, "net") == 0)
        run_net();
    else if (strcmp(kind, "netpeer") == 0)
        run_netpeer();
    else if (strcmp(kind, "idle") == 0)
        pause();
    else {
        printf("kvmload: unknown workload %s\n", kind);
        return 2;
    }
    return 0;
}
