/*
 * kvmload: the workload generator that runs inside kvmtop lab guests.
 *
 * One process per workload spec, started by the initramfs /init:
 *
 *   kvmload cpu:loops=1,duty=40[,period=100][,ctl=7000]
 *   kvmload memleak:rate=8[,step=128][,max=48]
 *   kvmload disk:mode=rw,iops=200,bs=4096[,dev=/dev/vda]
 *   kvmload net:dst=10.213.1.12,port=9000,pps=20000,size=1000[,batch=50]
 *   kvmload netpeer:port=9000[,batch=50]
 *   kvmload idle
 *
 * cpu      `loops` busy processes, each busy `duty` % of every `period` ms
 *          (wall clock).  With `ctl=PORT` it listens on UDP PORT for
 *          "duty=N" datagrams and changes the duty cycle of all loops.
 * memleak  allocates and touches `rate` MiB per minute in `step` KiB chunks
 *          and never frees them; after `max` MiB (0 = never) it frees all
 *          and starts again, so a long-running lab does not end in the OOM
 *          killer.
 * disk     O_DIRECT reads (`mode=r`), writes (`w`) or both alternately
 *          (`rw`) of `bs` bytes at random aligned offsets, `iops` per second
 *          (0 = as fast as possible).
 * net      UDP datagrams with `size` bytes of payload to dst:port at `pps`
 *          per second (0 = as fast as possible), sent in bursts every
 *          `batch` ms.
 * netpeer  UDP sink on `port`: drains the socket, then sleeps `batch` ms.
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
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
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
        char buf[64];
        for (;;) {
            ssize_t n = recv(s, buf, sizeof buf - 1, 0);
            if (n <= 0)
                continue;
            buf[n] = '\0';
            if (strncmp(buf, "duty=", 5) == 0) {
                int d = atoi(buf + 5);
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
    }
    while (wait(NULL) > 0)
        ;
}

/* ---- memleak ------------------------------------------------------------ */

static void run_memleak(void)
{
    double rate = dparam("rate", 8) * 1048576.0 / 60.0; /* bytes per second */
    size_t step = (size_t)dparam("step", 128) * 1024;
    double max = dparam("max", 48) * 1048576.0;
    static void *chunks[65536];
    size_t nchunks = 0;
    double t0 = now(), held = 0, next_report = 4 * 1048576.0;
    printf("kvmload memleak: rate=%.0f B/s step=%zu max=%.0f\n", rate, step, max);
    fflush(stdout);
    for (;;) {
        double due = rate * (now() - t0);
        while (held + step <= due) {
            char *p;
            if (max > 0 && held + step > max) {
                for (size_t i = 0; i < nchunks; i++)
                    munmap(chunks[i], step);
                printf("kvmload memleak: reached %.0f MiB, freeing and starting over\n",
                       held / 1048576.0);
                fflush(stdout);
                nchunks = 0;
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
            if (nchunks < sizeof chunks / sizeof chunks[0])
                chunks[nchunks++] = p;
            held += step;
            if (held >= next_report) {
                printf("kvmload memleak: %.0f MiB\n", held / 1048576.0);
                fflush(stdout);
                next_report += 4 * 1048576.0;
            }
        }
        sleep_until(t0 + (held + step) / rate);
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

static void run_net(void)
{
    const char *dst = sparam("dst", "10.213.1.12");
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

static void run_netpeer(void)
{
    int port = (int)dparam("port", 9000);
    double batch = dparam("batch", 50) / 1000.0;
    int s = udp_bind(port);
    static char buf[65536];
    long long got = 0, bytes = 0;
    double next_report = now() + 30;
    int rcvbuf = 4 << 20;
    if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    printf("kvmload netpeer: port=%d batch=%.0fms\n", port, batch * 1000);
    fflush(stdout);
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
