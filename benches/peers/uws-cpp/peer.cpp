// uws-cpp-peer: the ringpush peer contract (benches/peers/README.md) on uWebSockets, the
// C++ library itself (uWebSockets + uSockets, no TLS, no zlib), written against its public
// API the way its examples write a server (examples/EchoServer.cpp, UpgradeSync.cpp).
//
//   uws-cpp-peer --listen 127.0.0.1:9004 --threads 1
//
//   GET /echo       + Upgrade: every message back to the sender, same opcode.
//   GET /ws/{topic} + Upgrade: the socket subscribes to the topic in `open` (uWS calls it
//                   inside res->upgrade, before any other socket is read, so a message
//                   published after the 101 reaches it); each message it sends is
//                   ws->publish()ed: uWS's own pub/sub (TopicTree), which copies the
//                   message once, batches it per loop iteration and sends it to every
//                   subscriber of the topic except the publishing socket.
//   Topic names: 1 to 128 of A-Z a-z 0-9 . _ - : (ringpush's rule), else 400; any other
//   request 404. Pings are answered and the close handshake completed by uWS itself.
//
// Limits as the uWebSockets.js peer (benches/peers/uws/server.mjs) and ringpush's defaults:
// 1 MiB messages, 4 MiB queued per socket (what is published past it is dropped, uWS's
// policy with closeOnBackpressureLimit off), compression off, idleTimeout 120 s with uWS's
// automatic pings.
//
// Threads: uWS runs one event loop per thread; its users scale over cores with one App
// per thread, all listening on the same port (uSockets sets SO_REUSEPORT, so the kernel
// spreads the connections; the HelloWorldThreaded example before LocalCluster). Pub/sub is
// per App, so with --threads N > 1 a thread also hands what its clients publish to the
// other threads' loops (Loop::defer, uWS's thread-safe way in) and they App::publish it
// to their own subscribers, as the uWebSockets.js peer relays over a BroadcastChannel.
//
// One change below uWS's API: the listen backlog, raised from uSockets' fixed 512 to
// net.core.somaxconn (raise_backlog below says why).
//
// Signals: SIGTERM and SIGINT are blocked in every thread and taken by the main thread
// with sigwait(); it defers App::close() to each loop, every run() returns, exit 0.
#include "App.h"

#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <latch>
#include <memory>
#include <semaphore>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#ifndef PEER_BUILD_INFO
#define PEER_BUILD_INFO "uWebSockets (unknown commit)"
#endif

namespace {

constexpr unsigned kMaxPayload = 1u << 20;     // ringpush's default --max-message-bytes
constexpr unsigned kMaxBackpressure = 4u << 20; // ringpush's default --max-outbox-bytes

struct Options {
    std::string host;
    int port = 0;
    unsigned threads = 1;
};

[[noreturn]] void usage(const char *why) {
    std::fprintf(stderr, "uws-cpp-peer: %s (accepted: --listen HOST:PORT, --threads N)\n", why);
    std::exit(2);
}

unsigned affinity_cpus() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) {
        return static_cast<unsigned>(CPU_COUNT(&set));
    }
    return std::max(1u, std::thread::hardware_concurrency());
}

unsigned parse_threads(const char *s) {
    char *end = nullptr;
    errno = 0;
    unsigned long n = std::strtoul(s, &end, 10);
    if (errno || end == s || *end || n < 1 || n > 1024) usage("--threads N expects 1..1024");
    return static_cast<unsigned>(n);
}

Options parse_args(int argc, char **argv) {
    Options o;
    std::string listen = "127.0.0.1:9004";
    // As the Rust peers: --threads, else PEER_THREADS, else the CPUs in the affinity mask.
    const char *env = std::getenv("PEER_THREADS");
    o.threads = env && *env ? parse_threads(env) : affinity_cpus();
    for (int i = 1; i < argc; i++) {
        std::string arg = argv[i], value;
        bool inline_value = false;
        if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
            value = arg.substr(eq + 1);
            arg.resize(eq);
            inline_value = true;
        }
        auto next = [&]() -> std::string {
            if (inline_value) return value;
            if (i + 1 >= argc) usage((arg + " needs a value").c_str());
            return argv[++i];
        };
        if (arg == "--listen") {
            listen = next();
        } else if (arg == "--threads") {
            o.threads = parse_threads(next().c_str());
        } else {
            usage(("unknown argument " + arg).c_str());
        }
    }
    auto colon = listen.rfind(':');
    if (colon == std::string::npos) usage("--listen HOST:PORT expected");
    o.host = listen.substr(0, colon);
    if (o.host.size() >= 2 && o.host.front() == '[' && o.host.back() == ']') {
        o.host = o.host.substr(1, o.host.size() - 2);
    }
    char *end = nullptr;
    long port = std::strtol(listen.c_str() + colon + 1, &end, 10);
    if (end == listen.c_str() + colon + 1 || *end || port < 0 || port > 65535) {
        usage("--listen HOST:PORT expected");
    }
    o.port = static_cast<int>(port);
    return o;
}

// ringpush's topic rule: 1 to 128 characters of A-Z a-z 0-9 . _ - :
bool valid_topic(std::string_view t) {
    if (t.empty() || t.size() > 128) return false;
    for (unsigned char c : t) {
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-' || c == ':';
        if (!ok) return false;
    }
    return true;
}

struct EchoData {};
struct TopicData {
    std::string topic;
};

// One event loop thread: its App, its Loop (for defer from other threads), its port.
struct Worker {
    uWS::App *app = nullptr;
    uWS::Loop *loop = nullptr;
    int port = -1;
};

std::vector<Worker> workers;
std::atomic<bool> stopping{false};

// Hands a message published on thread `self` to the other threads' Apps (N > 1 only).
void relay(unsigned self, std::string_view topic, std::string_view message, uWS::OpCode op) {
    if (workers.size() < 2 || stopping.load(std::memory_order_relaxed)) return;
    // One copy for all the other threads; `message` is only valid during the handler.
    auto shared = std::make_shared<const std::pair<std::string, std::string>>(topic, message);
    for (unsigned i = 0; i < workers.size(); i++) {
        if (i == self) continue;
        uWS::App *app = workers[i].app;
        workers[i].loop->defer([app, shared, op]() { app->publish(shared->first, shared->second, op); });
    }
}

// uSockets listens with a fixed backlog of 512 (bsd.c) and has no setting for it. 10,000
// connects at once (compare.sh's connrate) overflowed it here (TcpExtListenOverflows
// 1,854; handshake p99 1.1-2.1 s, the SYN retry timer) where ringpush (4096) did not, so
// the queue is raised to net.core.somaxconn, as the Go and Node peers listen: listen()
// again on a listening socket only changes its backlog (Linux).
void raise_backlog(int fd) {
    int backlog = 4096;
    if (FILE *f = std::fopen("/proc/sys/net/core/somaxconn", "r")) {
        if (std::fscanf(f, "%d", &backlog) != 1) backlog = 4096;
        std::fclose(f);
    }
    if (::listen(fd, backlog) != 0) std::perror("uws-cpp-peer: listen backlog");
}

// Startup: main starts the threads one by one (each binds after the previous one, so a
// port 0 chosen by the first is the one the others join) and lets them all into run()
// together, so a relay never finds a thread without its App.
std::binary_semaphore listened{0};
std::latch all_listening{1};

void run_worker(unsigned self, const Options &o, std::latch &finished) {
    uWS::App app;
    app.ws<EchoData>("/echo", {
           .compression = uWS::DISABLED,
           .maxPayloadLength = kMaxPayload,
           .idleTimeout = 120,
           .maxBackpressure = kMaxBackpressure,
           .message = [](auto *ws, std::string_view message, uWS::OpCode op) { ws->send(message, op); },
       })
        .ws<TopicData>("/ws/*", {
            .compression = uWS::DISABLED,
            .maxPayloadLength = kMaxPayload,
            .idleTimeout = 120,
            .maxBackpressure = kMaxBackpressure,
            .upgrade =
                [](auto *res, auto *req, auto *context) {
                    std::string_view topic = req->getUrl().substr(4); // after "/ws/"
                    if (!valid_topic(topic)) {
                        res->writeStatus("400 Bad Request")->end("bad topic\n");
                        return;
                    }
                    res->template upgrade<TopicData>({.topic = std::string(topic)},
                                                     req->getHeader("sec-websocket-key"),
                                                     req->getHeader("sec-websocket-protocol"),
                                                     req->getHeader("sec-websocket-extensions"), context);
                },
            .open = [](auto *ws) { ws->subscribe(ws->getUserData()->topic); },
            .message =
                [self](auto *ws, std::string_view message, uWS::OpCode op) {
                    const std::string &topic = ws->getUserData()->topic;
                    // On the WebSocket (not the App): the publisher is skipped.
                    ws->publish(topic, message, op);
                    relay(self, topic, message, op);
                },
        })
        .any("/*", [](auto *res, auto * /*req*/) { res->writeStatus("404 Not Found")->end("not found\n"); })
        .listen(o.host, o.port, [&](us_listen_socket_t *ls) {
            if (!ls) return;
            auto *s = reinterpret_cast<us_socket_t *>(ls);
            workers[self].port = us_socket_local_port(false, s);
            raise_backlog(static_cast<int>(reinterpret_cast<intptr_t>(us_socket_get_native_handle(false, s))));
        });
    workers[self].app = &app;
    workers[self].loop = uWS::Loop::get();
    listened.release();
    all_listening.wait();
    if (workers[self].port >= 0) app.run();
    // Another thread may still defer to this loop until it too has left run(): keep the
    // App alive until every loop is done.
    finished.arrive_and_wait();
}

void raise_nofile() {
    // One fd per connection: take the hard limit, as Go and Node do by themselves.
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

} // namespace

int main(int argc, char **argv) {
    Options o = parse_args(argc, argv);
    raise_nofile();

    // Blocked here, inherited by every worker thread: only sigwait() below takes them.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

    workers.resize(o.threads);
    std::latch finished(o.threads);
    std::vector<std::thread> threads;
    for (unsigned i = 0; i < o.threads; i++) {
        threads.emplace_back(run_worker, i, std::cref(o), std::ref(finished));
        listened.acquire();
        if (workers[i].port < 0) {
            std::fprintf(stderr, "uws-cpp-peer: cannot listen on %s:%d\n", o.host.c_str(), o.port);
            std::_Exit(1);
        }
        o.port = workers[i].port;
    }
    all_listening.count_down();
    std::printf("uws-cpp-peer: listening on %s:%d (%u threads, %s)\n", o.host.c_str(), workers[0].port,
                o.threads, PEER_BUILD_INFO);
    std::fflush(stdout);

    int sig = 0;
    sigwait(&sigs, &sig);
    stopping.store(true);
    for (Worker &w : workers) {
        uWS::App *app = w.app;
        w.loop->defer([app]() { app->close(); });
    }
    for (std::thread &t : threads) t.join();
    return 0;
}
