/*
 * sb-jackmidi: studio-bridge's native MIDI helper for JACK (one process per MIDI link).
 *
 * It speaks the same framed protocol on stdin/stdout as the Python helper
 * (bridge/devices/midi/helper_proc.py), so MidiLink uses either. Why native: python-rtmidi runs
 * Python in JACK's realtime thread (GIL, a thread state per event) and keeps two JACK clients
 * per link (one per direction) that JACK wakes every period. Here one JACK client owns both
 * ports; no Python, no allocation and nothing that can block runs in the realtime thread.
 *
 * Input takes the shortest way that cannot block: when nothing is queued before it and no other
 * thread is writing frames (a trylock), the process callback writes the period's events to the
 * (non-blocking) pipe itself, in one write() of at most PIPE_BUF bytes, which a pipe takes whole
 * or refuses. That is one thread wake-up fewer per burst than handing them to a thread; Ardour
 * likewise signals its butler from the process thread with a pipe write. Otherwise (pipe full,
 * the lock busy, earlier input still queued, a long SysEx, before the ready frame) the events go
 * into a lock-free ring buffer and a semaphore wakes the writer thread, which keeps their order.
 *
 *   sb-jackmidi CLIENT_NAME IN_PEER OUT_PEER        (a peer is a full JACK port name or "-")
 *
 * IN_PEER is the port we listen to (the controller's output), OUT_PEER the port we send to.
 * Frames: type (1 byte) + length (4 bytes, big endian) + payload.
 *   helper -> daemon: R ready (JSON {"in_port": .., "out_port": ..}), E cannot open (text; exit),
 *                     M one MIDI event as received, L the device is gone (text; exit),
 *                     W a warning (text)
 *   daemon -> helper: S bytes to send (one or several complete messages), Q close and exit
 *                     (so does end of input)
 * The device is gone when a peer port unregisters, when our connection to it is dropped (a
 * port closed and reopened), or when the JACK server shuts down: all noticed through JACK's
 * callbacks, with no timer. SIGINT and SIGTERM are ignored (the daemon turns the lights off
 * through us first, then sends Q); SIGUSR1 closes and exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jack/jack.h>
#include <jack/midiport.h>
#include <jack/ringbuffer.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define RB_SIZE (1 << 18)    /* bytes of MIDI (with 2-byte length headers) per direction */
#define MAX_MSG 65536        /* longest message (SysEx) we pass through */
#define F_SETPIPE_SZ_ 1031

static jack_client_t *client;
static jack_port_t *in_port, *out_port;
static jack_ringbuffer_t *rb_in, *rb_out;
static sem_t wake;                    /* posted by the realtime thread and JACK's callbacks */
static volatile sig_atomic_t check_ports, server_gone, stopping, closing, broken, ready;
static pthread_t main_thread;
static volatile int in_overflow, out_overflow; /* counted in the realtime thread */
static const char *peer_in, *peer_out;         /* NULL when not used */
static char our_in[512], our_out[512];
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER; /* frames to stdout */
static int out_fd = 1;
static int ring_only; /* SB_JACKMIDI_RING_ONLY=1: every event through the ring (the tests' way to
                         run that path on every message) */

/* Ends the main thread's wait for input, so it closes the client cleanly (a client that just
 * exits can wedge a synchronous-mode jackd). */
static void stop_main(void) {
    stopping = 1;
    pthread_kill(main_thread, SIGUSR1);
}

/* Write all of it to the (non-blocking) frame pipe, waiting for room. Caller holds out_lock. */
static void write_all(const unsigned char *p, size_t n) {
    while (n > 0 && !broken) {
        ssize_t w = write(out_fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { /* the daemon is behind: wait for room, as a blocking write would */
                struct pollfd pf = {out_fd, POLLOUT, 0};
                poll(&pf, 1, -1);
                continue;
            }
            broken = 1; /* the daemon is gone */
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void frame_head(unsigned char *head, char kind, uint32_t len) {
    head[0] = (unsigned char)kind;
    head[1] = len >> 24;
    head[2] = len >> 16;
    head[3] = len >> 8;
    head[4] = len;
}

static void put_frame(char kind, const void *data, uint32_t len) {
    static unsigned char one[PIPE_BUF];
    if (broken) return;
    pthread_mutex_lock(&out_lock);
    if (len + 5 <= sizeof one) { /* one write: the daemon wakes once, for the whole frame */
        frame_head(one, kind, len);
        memcpy(one + 5, data, len);
        write_all(one, len + 5);
    } else {
        unsigned char head[5];
        frame_head(head, kind, len);
        write_all(head, 5);
        write_all(data, len);
    }
    pthread_mutex_unlock(&out_lock);
}

static void put_text(char kind, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if (n >= (int)sizeof buf) n = sizeof buf - 1;
    put_frame(kind, buf, (uint32_t)n);
}

/* ---------------------------------------------------------------- realtime thread */

/* This period's input as M frames in one write, if that can be done without blocking or
 * reordering; 0 if the events must take the ring buffer instead. */
static int write_direct(void *buf, jack_nframes_t n) {
    static unsigned char out[PIPE_BUF];
    size_t fill = 0;
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE) || broken || ring_only) return 0;
    for (jack_nframes_t i = 0; i < n; i++) {
        jack_midi_event_t ev;
        if (jack_midi_event_get(&ev, buf, i) != 0 || ev.size == 0 || ev.size > 0xFFFF) continue;
        if (fill + 5 + ev.size > sizeof out) return 0; /* more than a pipe takes whole */
        frame_head(out + fill, 'M', (uint32_t)ev.size);
        memcpy(out + fill + 5, ev.buffer, ev.size);
        fill += 5 + ev.size;
    }
    if (fill == 0) return 1;
    if (pthread_mutex_trylock(&out_lock) != 0) return 0; /* another thread is writing frames */
    int done = 0;
    /* under the lock the writer thread is not between taking events from the ring and writing
     * them: an empty ring means nothing older is still on its way */
    if (jack_ringbuffer_read_space(rb_in) == 0) {
        ssize_t w = write(out_fd, out, fill); /* <= PIPE_BUF: all of it, or EAGAIN */
        done = w == (ssize_t)fill;
    }
    pthread_mutex_unlock(&out_lock);
    return done;
}

static int process(jack_nframes_t nframes, void *arg) {
    (void)arg;
    int posted = 0;
    if (in_port) {
        void *buf = jack_port_get_buffer(in_port, nframes);
        jack_nframes_t n = jack_midi_get_event_count(buf);
        if (n > 0 && write_direct(buf, n)) n = 0;
        for (jack_nframes_t i = 0; i < n; i++) {
            jack_midi_event_t ev;
            if (jack_midi_event_get(&ev, buf, i) != 0 || ev.size == 0 || ev.size > 0xFFFF) continue;
            if (jack_ringbuffer_write_space(rb_in) < ev.size + 2) {
                in_overflow++;
                continue;
            }
            unsigned char len[2] = {ev.size >> 8, ev.size & 0xFF};
            jack_ringbuffer_write(rb_in, (const char *)len, 2);
            jack_ringbuffer_write(rb_in, (const char *)ev.buffer, ev.size);
            posted = 1;
        }
    }
    if (out_port) {
        void *buf = jack_port_get_buffer(out_port, nframes);
        jack_midi_clear_buffer(buf);
        jack_nframes_t t = 0;
        while (jack_ringbuffer_read_space(rb_out) >= 2) {
            unsigned char len[2];
            jack_ringbuffer_peek(rb_out, (char *)len, 2);
            size_t size = ((size_t)len[0] << 8) | len[1];
            if (jack_ringbuffer_read_space(rb_out) < size + 2) break; /* not complete yet */
            jack_midi_data_t *dst = jack_midi_event_reserve(buf, t < nframes ? t : nframes - 1, size);
            if (dst == NULL) break; /* port buffer full: the rest goes next period, in order */
            jack_ringbuffer_read_advance(rb_out, 2);
            jack_ringbuffer_read(rb_out, (char *)dst, size);
            if (t + 1 < nframes) t++;
        }
    }
    if (posted) sem_post(&wake);
    return 0;
}

/* ---------------------------------------------------------------- JACK's other threads */

static void on_registration(jack_port_id_t id, int registered, void *arg) {
    (void)id;
    (void)arg;
    if (!registered) {
        check_ports = 1;
        sem_post(&wake);
    }
}

static void on_connect(jack_port_id_t a, jack_port_id_t b, int connected, void *arg) {
    (void)a;
    (void)b;
    (void)arg;
    if (!connected) {
        check_ports = 1;
        sem_post(&wake);
    }
}

static void on_shutdown(void *arg) {
    (void)arg;
    server_gone = 1;
    sem_post(&wake);
}

/* ---------------------------------------------------------------- reader thread */

/* The reason the device is gone, or NULL. Runs outside JACK's threads. */
static const char *gone(char *why, size_t cap) {
    if (server_gone) return "MIDI port gone: the JACK server shut down";
    const char *peers[2] = {peer_in, peer_out};
    jack_port_t *ours[2] = {in_port, out_port};
    for (int i = 0; i < 2; i++) {
        if (!peers[i]) continue;
        jack_port_t *p = jack_port_by_name(client, peers[i]);
        if (p == NULL) {
            snprintf(why, cap, "MIDI port gone: %s", peers[i]);
            return why;
        }
        if (!jack_port_connected_to(ours[i], peers[i])) {
            /* look again a little later: a graph change under way (another client connecting
             * or leaving) must not be taken for our connection being dropped */
            struct timespec ts = {0, 30000000};
            nanosleep(&ts, NULL);
            if (jack_port_by_name(client, peers[i]) != NULL && jack_port_connected_to(ours[i], peers[i]))
                continue;
            snprintf(why, cap, "MIDI port gone: %s (connection dropped: the port was closed and opened again)",
                     peers[i]);
            return why;
        }
    }
    return NULL;
}

static void *reader(void *arg) {
    (void)arg;
    static unsigned char msg[MAX_MSG];
    int reported_in = 0, reported_out = 0;
    for (;;) {
        while (sem_wait(&wake) != 0 && errno == EINTR) {
        }
        if (!ready && !stopping) continue; /* nothing before the R frame; main posts again then */
        /* take and write under the lock, so the realtime thread never writes past them */
        pthread_mutex_lock(&out_lock);
        size_t fill = 0;
        while (jack_ringbuffer_read_space(rb_in) >= 2) {
            unsigned char len[2];
            jack_ringbuffer_read(rb_in, (char *)len, 2);
            size_t size = ((size_t)len[0] << 8) | len[1];
            if (fill + 5 + size > sizeof msg) {
                write_all(msg, fill);
                fill = 0;
            }
            if (5 + size > sizeof msg) { /* a SysEx longer than the batch: on its own */
                unsigned char head[5];
                frame_head(head, 'M', (uint32_t)size);
                write_all(head, 5);
                while (size > 0) {
                    size_t part = size < sizeof msg ? size : sizeof msg;
                    jack_ringbuffer_read(rb_in, (char *)msg, part);
                    write_all(msg, part);
                    size -= part;
                }
                continue;
            }
            frame_head(msg + fill, 'M', (uint32_t)size);
            jack_ringbuffer_read(rb_in, (char *)msg + fill + 5, size);
            fill += 5 + size;
        }
        write_all(msg, fill);
        pthread_mutex_unlock(&out_lock);
        if (in_overflow != reported_in) {
            put_text('W', "MIDI input from %s: %d messages lost (the daemon did not keep up)", peer_in,
                     in_overflow - reported_in);
            reported_in = in_overflow;
        }
        if (out_overflow != reported_out) {
            put_text('W', "MIDI send to %s: %d messages lost (output buffer full)", peer_out,
                     out_overflow - reported_out);
            reported_out = out_overflow;
        }
        if (stopping) return NULL;
        if (broken) {
            stop_main();
            return NULL;
        }
        if ((check_ports || server_gone) && ready && !closing) { /* not before we are connected */
            check_ports = 0;
            char why[768];
            const char *reason = gone(why, sizeof why);
            if (reason) {
                put_text('L', "%s", reason); /* the daemon reconnects the device */
                stop_main();
                return NULL;
            }
        }
    }
}

/* ---------------------------------------------------------------- main thread */

static int read_full(int fd, unsigned char *buf, size_t n) {
    size_t off = 0;
    while (off < n) {
        ssize_t r = read(fd, buf + off, n - off);
        if (r == 0) return 0;
        if (r < 0) {
            if (errno == EINTR) {
                if (stopping) return 0;
                continue;
            }
            return 0;
        }
        off += (size_t)r;
    }
    return 1;
}

static size_t msg_len(const unsigned char *d, size_t n) {
    /* length of the complete MIDI message at d (n bytes available); 0 if malformed */
    unsigned char s = d[0];
    if (s < 0x80) return 0;
    if (s == 0xF0) {
        for (size_t i = 1; i < n; i++)
            if (d[i] == 0xF7) return i + 1;
        return 0;
    }
    size_t len;
    if (s < 0xF0) len = ((s & 0xE0) == 0xC0) ? 2 : 3;
    else if (s == 0xF1 || s == 0xF3) len = 2;
    else if (s == 0xF2) len = 3;
    else len = 1;
    return len <= n ? len : 0;
}

static void send_bytes(const unsigned char *d, size_t n) {
    while (n > 0) {
        size_t len = msg_len(d, n);
        if (len == 0) {
            put_text('W', "MIDI send to %s: %zu bytes that are no complete MIDI message dropped", peer_out, n);
            return;
        }
        if (len > 0xFFFF) len = 0xFFFF;
        /* wait (bounded) for room rather than dropping a discrete message */
        for (int tries = 0; jack_ringbuffer_write_space(rb_out) < len + 2; tries++) {
            if (tries >= 2000 || server_gone) { /* 2 s: JACK is not running our client */
                out_overflow++;
                sem_post(&wake);
                return;
            }
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        unsigned char hdr[2] = {len >> 8, len & 0xFF};
        jack_ringbuffer_write(rb_out, (const char *)hdr, 2);
        jack_ringbuffer_write(rb_out, (const char *)d, len);
        d += len;
        n -= len;
    }
}

static void on_usr1(int sig) {
    (void)sig;
    stopping = 1;
}

static void json_str(char *dst, size_t cap, const char *s) {
    if (!s) {
        snprintf(dst, cap, "null");
        return;
    }
    size_t o = 0;
    dst[o++] = '"';
    for (; *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", c);
        } else {
            dst[o++] = (char)c;
        }
    }
    dst[o++] = '"';
    dst[o] = 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: sb-jackmidi CLIENT_NAME IN_PEER|- OUT_PEER|-\n");
        return 2;
    }
    const char *name = argv[1];
    peer_in = strcmp(argv[2], "-") ? argv[2] : NULL;
    peer_out = strcmp(argv[3], "-") ? argv[3] : NULL;

    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    prctl(PR_SET_PDEATHSIG, SIGUSR1); /* never outlive the daemon (but close cleanly) */
    main_thread = pthread_self();
    /* SIGUSR1 must reach the main thread (to end its read): block it in every thread JACK
     * and we create, unblock it here once they exist */
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);

    const char *ring_env = getenv("SB_JACKMIDI_RING_ONLY");
    ring_only = ring_env != NULL && strcmp(ring_env, "1") == 0;
    out_fd = dup(1);
    dup2(2, 1); /* libjack's chatter goes to stderr, never into the frame stream */
    fcntl(out_fd, F_SETPIPE_SZ_, 1 << 20);
    fcntl(out_fd, F_SETFL, fcntl(out_fd, F_GETFL) | O_NONBLOCK); /* the realtime thread never waits */
    sem_init(&wake, 0, 0);

    jack_status_t status;
    client = jack_client_open(name, JackNoStartServer, &status);
    if (!client) {
        put_text('E', "cannot open MIDI ports for '%s': JACK server not reachable (status 0x%x)", name, status);
        return 3;
    }
    rb_in = jack_ringbuffer_create(RB_SIZE);
    rb_out = jack_ringbuffer_create(RB_SIZE);
    if (peer_in) in_port = jack_port_register(client, "in", JACK_DEFAULT_MIDI_TYPE, JackPortIsInput, 0);
    if (peer_out) out_port = jack_port_register(client, "out", JACK_DEFAULT_MIDI_TYPE, JackPortIsOutput, 0);
    if ((peer_in && !in_port) || (peer_out && !out_port) || !rb_in || !rb_out) {
        put_text('E', "cannot open MIDI ports for '%s': port registration failed", name);
        jack_client_close(client);
        return 3;
    }
    if (in_port) snprintf(our_in, sizeof our_in, "%s", jack_port_name(in_port));
    if (out_port) snprintf(our_out, sizeof our_out, "%s", jack_port_name(out_port));
    jack_set_process_callback(client, process, NULL);
    jack_set_port_registration_callback(client, on_registration, NULL);
    jack_set_port_connect_callback(client, on_connect, NULL);
    jack_on_shutdown(client, on_shutdown, NULL);
    if (jack_activate(client) != 0) {
        put_text('E', "cannot open MIDI ports for '%s': cannot activate the JACK client", name);
        jack_client_close(client);
        return 3;
    }
    /* output first, input last: nothing flows in before we are ready */
    if (peer_out && jack_connect(client, our_out, peer_out) != 0) {
        put_text('E', "cannot open MIDI ports for '%s': cannot connect to %s", name, peer_out);
        jack_client_close(client);
        return 3;
    }
    pthread_t th;
    pthread_create(&th, NULL, reader, NULL);
    if (peer_in && jack_connect(client, peer_in, our_in) != 0) {
        put_text('E', "cannot open MIDI ports for '%s': cannot connect to %s", name, peer_in);
        jack_client_close(client);
        return 3;
    }
    pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
    char a[600], b[600], ready_json[1300];
    json_str(a, sizeof a, peer_in);
    json_str(b, sizeof b, peer_out);
    snprintf(ready_json, sizeof ready_json, "{\"in_port\": %s, \"out_port\": %s}", a, b);
    put_frame('R', ready_json, (uint32_t)strlen(ready_json));
    __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    check_ports = 1; /* a peer that vanished while we connected; input that came meanwhile */
    sem_post(&wake);

    static unsigned char payload[1 << 20];
    for (;;) {
        unsigned char head[5];
        if (stopping || broken || !read_full(0, head, 5)) break;
        uint32_t size = ((uint32_t)head[1] << 24) | ((uint32_t)head[2] << 16) | ((uint32_t)head[3] << 8) | head[4];
        if (size > sizeof payload) break;
        if (size && !read_full(0, payload, size)) break;
        if (head[0] == 'Q') break;
        if (head[0] == 'S' && peer_out) send_bytes(payload, size);
    }
    /* close: stop the input at the source, let JACK finish, flush what we still owe */
    closing = 1;
    if (!server_gone) {
        if (peer_in) jack_disconnect(client, peer_in, our_in);
        for (int i = 0; i < 200 && jack_ringbuffer_read_space(rb_out) > 0 && !server_gone; i++) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        struct timespec drain = {0, 50000000};
        nanosleep(&drain, NULL);
    }
    stopping = 1;
    sem_post(&wake);
    pthread_join(th, NULL);
    if (!server_gone) jack_deactivate(client);
    jack_client_close(client);
    return 0;
}
