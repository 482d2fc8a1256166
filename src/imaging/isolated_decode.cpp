// See isolated_decode.h. The frame header is 16 bytes: magic "HGDF", version (u16), kind (u16),
// body length (u64), native byte order. Kinds 1 and 2 carry an error text from the child (a failure
// it caught itself, and one after an allocation failed); the caller's frames start at 16.
#include "imaging/isolated_decode.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <optional>

#include "core/error.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HG_SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define HG_SANITIZER_BUILD 1
#endif
#endif

namespace hg::imaging {

namespace {

constexpr uint32_t kMagic = 0x46444748;  // "HGDF"
constexpr uint16_t kVersion = 1;
constexpr uint16_t kFrameError = 1, kFrameOutOfMemory = 2;
constexpr uint64_t kMaxErrorText = 64 << 10;
constexpr size_t kKeptStderr = 32 << 10;
constexpr int kExitSetup = 120;  // the child could not set itself up (pipes, limits)
constexpr int kExitWrite = 121;  // the child could not write its result (the parent is gone)

struct FrameHeader {
    uint32_t magic;
    uint16_t version, kind;
    uint64_t length;
};
static_assert(sizeof(FrameHeader) == 16);

// An error frame from the child, thrown in the parent by ChildInput.
struct ChildReportedError {
    bool out_of_memory;
    std::string text;
};
struct ChildTimedOut {};

// ---------------------------------------------------------------------------------------------
// Child side. Everything here runs in the forked child, which has only the forking thread.

std::atomic<bool> allocation_failed{false};

void on_allocation_failure() {
    allocation_failed = true;
    throw std::bad_alloc();
}

void write_all(int fd, const void* p, size_t n) {
    const uint8_t* c = static_cast<const uint8_t*>(p);
    while (n > 0) {
        ssize_t k = ::write(fd, c, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) _exit(kExitWrite);
        c += k;
        n -= size_t(k);
    }
}

// The address space of this process now (VmSize), 0 when /proc is not there.
uint64_t address_space_bytes() {
    int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[128];
    ssize_t n;
    do n = ::read(fd, buf, sizeof buf - 1);
    while (n < 0 && errno == EINTR);
    ::close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    uint64_t pages = 0;
    for (const char* p = buf; *p >= '0' && *p <= '9'; p++) pages = pages * 10 + uint64_t(*p - '0');
    return pages * uint64_t(sysconf(_SC_PAGESIZE));
}

void close_from(int first) {
    if (close_range(unsigned(first), ~0U, 0) == 0) return;
    struct rlimit r {};
    long top = getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur != RLIM_INFINITY ? long(r.rlim_cur) : 65536;
    for (long fd = first; fd < top; fd++) ::close(int(fd));
}

// Sends an error frame without allocating (the child may be out of memory).
void report(ChildOutput& out, uint16_t kind, const char* text) {
    size_t n = std::min(std::strlen(text), size_t(kMaxErrorText));
    out.send(kind, {std::span(reinterpret_cast<const uint8_t*>(text), n)});
}

void report_out_of_memory(ChildOutput& out, uint64_t limit, const char* what) {
    static char text[kMaxErrorText];
    int n = limit ? std::snprintf(text, sizeof text, "an allocation failed under the limit of %llu MiB",
                                  (unsigned long long)(limit >> 20))
                  : std::snprintf(text, sizeof text, "an allocation failed");
    if (std::strcmp(what, "std::bad_alloc") != 0 && n > 0 && size_t(n) < sizeof text)
        std::snprintf(text + n, sizeof text - size_t(n), "; then: %s", what);
    report(out, kFrameOutOfMemory, text);
}

}  // namespace

void ChildOutput::send(uint16_t kind, std::initializer_list<std::span<const uint8_t>> parts) {
    FrameHeader h{kMagic, kVersion, kind, 0};
    for (auto p : parts) h.length += p.size();
    write_all(fd_, &h, sizeof h);
    for (auto p : parts) write_all(fd_, p.data(), p.size());
}

uint64_t ChildOutput::memory_limit() const {
    struct rlimit r {};
    if (!limited_ || getrlimit(RLIMIT_AS, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return 0;
    return r.rlim_cur - base_;
}

void ChildOutput::raise_memory_limit(uint64_t bytes) {
    if (!limited_) return;
    struct rlimit r {};
    if (getrlimit(RLIMIT_AS, &r) != 0) return;
    rlim_t want = std::min<uint64_t>(base_ + bytes, max_);
    if (want > r.rlim_cur) {
        r.rlim_cur = want;
        setrlimit(RLIMIT_AS, &r);
    }
}

struct ChildRunner {
    // ------------------------------------------------------------------ child
    [[noreturn]] static void child_main(int res_w, int err_w, pid_t parent, const ChildLimits& lim,
                                        const std::function<void(ChildOutput&)>& work) {
        // Die with the parent; default signal handling (no handler of the embedder runs here),
        // nothing blocked, so SIGXCPU and SIGABRT end the child.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(kExitSetup);
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        for (int s = 1; s < NSIG; s++) {
            if (s == SIGKILL || s == SIGSTOP) continue;
#ifdef HG_SANITIZER_BUILD
            if (s == SIGSEGV || s == SIGBUS || s == SIGFPE || s == SIGILL) continue;  // the sanitizer reports these
#endif
            sigaction(s, &dfl, nullptr);  // refused for the signals glibc keeps for itself: fine
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        // fd 1 and 2 → the stderr pipe, fd 3 → the result pipe; every other fd closed.
        int e = fcntl(err_w, F_DUPFD, 10), r = fcntl(res_w, F_DUPFD, 10);
        if (e < 0 || r < 0 || dup2(e, 1) < 0 || dup2(e, 2) < 0 || dup2(r, 3) < 0) _exit(kExitSetup);
        close_from(4);

        ChildOutput out;
        out.fd_ = 3;
        if (uint64_t base = address_space_bytes()) {
            out.base_ = base;
            out.max_ = base + std::max(lim.memory_bytes_max, lim.memory_bytes);
            out.limited_ = true;
            struct rlimit as {base + lim.memory_bytes, out.max_};
            if (setrlimit(RLIMIT_AS, &as) != 0) _exit(kExitSetup);
        }
        struct rlimit cpu {rlim_t(lim.cpu_seconds), rlim_t(lim.cpu_seconds) + 1}, core {0, 0};
        if (setrlimit(RLIMIT_CPU, &cpu) != 0 || setrlimit(RLIMIT_CORE, &core) != 0) _exit(kExitSetup);
        prctl(PR_SET_DUMPABLE, 0);  // no core dump, not even to a core_pattern pipe
        std::set_new_handler(on_allocation_failure);

        try {
            work(out);
        } catch (const std::bad_alloc& ex) {
            report_out_of_memory(out, out.memory_limit(), ex.what());
        } catch (const std::exception& ex) {
            if (allocation_failed) report_out_of_memory(out, out.memory_limit(), ex.what());
            else report(out, kFrameError, ex.what());
        } catch (...) {
            report(out, kFrameError, "unknown exception");
        }
        _exit(0);
    }

    // ------------------------------------------------------------------ parent
    pid_t pid = -1;
    int res = -1, err = -1, pidfd = -1;
    bool exited = false, reaped = false, status_known = false, timed_out = false, killed = false;
    bool res_eof = false;     // the result pipe reached its end
    bool discarding = false;  // the message is complete: bytes still arriving are extra
    uint64_t extra_bytes = 0;
    int status = 0;
    struct rusage usage {};
    std::chrono::steady_clock::time_point deadline;
    std::string stderr_tail;

    void attach(ChildInput& in) { in.run_ = this; }

    ~ChildRunner() {
        if (pid > 0 && !reaped) {
            kill_child();
            reap();
        }
        for (int fd : {res, err, pidfd})
            if (fd >= 0) ::close(fd);
    }

    void kill_child() {
        if (!reaped && !exited) {
            ::kill(pid, SIGKILL);
            killed = true;
        }
    }

    void reap() {
        for (;;) {
            pid_t w = wait4(pid, &status, 0, &usage);
            if (w == pid) {
                status_known = true;
                break;
            }
            if (w < 0 && errno == EINTR) continue;
            break;  // ECHILD: collected elsewhere (a SIGCHLD handler or SIG_IGN in the embedder)
        }
        reaped = exited = true;
    }

    void drain(int& fd, bool keep) {
        uint8_t buf[16384];
        for (;;) {
            ssize_t n = ::read(fd, buf, sizeof buf);
            if (n > 0) {
                if (keep) {
                    stderr_tail.append(reinterpret_cast<char*>(buf), size_t(n));
                    if (stderr_tail.size() > kKeptStderr) stderr_tail.erase(0, stderr_tail.size() - kKeptStderr);
                } else {
                    extra_bytes += uint64_t(n);
                }
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n == 0) {  // end of file
                if (!keep) res_eof = true;
                ::close(fd);
                fd = -1;
            }
            return;  // EAGAIN: nothing more for now
        }
    }

    void check_exited() {  // without a pidfd: has the child ended (without reaping it)?
        siginfo_t si{};
        if (waitid(P_PID, id_t(pid), &si, WEXITED | WNOHANG | WNOWAIT) != 0) {
            if (errno != EINTR) exited = true;  // ECHILD
        } else if (si.si_pid == pid) {
            exited = true;
        }
    }

    // Waits until the result pipe has data, the child's stderr has data, or the child ended; keeps
    // stderr. Past the deadline, kills the child and throws ChildTimedOut.
    void wait_for_activity() {
        auto now = std::chrono::steady_clock::now();
        if (now >= deadline) {
            kill_child();
            timed_out = true;
            throw ChildTimedOut{};
        }
        int ms = int(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count()) + 1;
        pollfd fds[3];
        int n = 0, i_res = -1, i_err = -1, i_pid = -1;
        if (res >= 0) fds[i_res = n++] = {res, POLLIN, 0};
        if (err >= 0) fds[i_err = n++] = {err, POLLIN, 0};
        if (pidfd >= 0 && !exited) fds[i_pid = n++] = {pidfd, POLLIN, 0};
        if (pidfd < 0 && !exited) ms = std::min(ms, 10);
        int r = poll(fds, nfds_t(n), ms);
        if (r < 0) return;  // EINTR: the caller loops
        if (i_err >= 0 && fds[i_err].revents) drain(err, true);
        if (i_res >= 0 && fds[i_res].revents && discarding) drain(res, false);
        if (i_pid >= 0 && fds[i_pid].revents) exited = true;
        if (pidfd < 0 && !exited) check_exited();
    }

    // After the message: waits for the child to end (it does right after its last frame).
    void wait_exit() {
        discarding = true;
        while (!exited) wait_for_activity();
        reap();
        if (err >= 0) drain(err, true);  // what it wrote before ending is all in the pipe now
        if (res >= 0) drain(res, false);
    }

    // ------------------------------------------------------------------ reporting
    // Why the child ended abnormally, or "" when it exited with status 0 (or its status is unknown).
    std::string abnormal_end(const ChildLimits& lim) const {
        auto has = [&](const char* s) { return stderr_tail.find(s) != std::string::npos; };
        auto line_with = [&](const char* s) {
            size_t p = stderr_tail.find(s);
            size_t b = stderr_tail.rfind('\n', p);
            b = b == std::string::npos ? 0 : b + 1;
            size_t e = stderr_tail.find('\n', p);
            std::string l = stderr_tail.substr(b, e == std::string::npos ? std::string::npos : e - b);
            std::string prog = std::string(program_invocation_short_name) + ": ";
            if (l.rfind(prog, 0) == 0) l.erase(0, prog.size());
            return l;
        };
        if (timed_out) return "took too long (more than " + std::to_string(lim.wall_seconds) + " s; stopped)";
        if (!status_known || killed) return "";
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
#ifdef HG_SANITIZER_BUILD
        bool oom_report = has("AddressSanitizer: out of memory") || has("AddressSanitizer: requested allocation size") ||
                          has("AddressSanitizer: allocator is out of memory") || has("allocation-size-too-big");
        if (oom_report) return "out of memory (" + line_with("Sanitizer") + ")";
        if (has("ERROR: AddressSanitizer") || has("ERROR: LeakSanitizer") || has("runtime error:")) {
            // A memory error or undefined behaviour in the decoder: a bug to fix, not a bad file.
            std::fprintf(stderr, "isolated decoder: sanitizer report from the child process:\n%s\n", stderr_tail.c_str());
            std::abort();
        }
#endif
        if (has("Assertion `")) return "assertion failed: " + line_with("Assertion `");
        if (has("std::bad_alloc")) return "out of memory";
        if (WIFSIGNALED(status)) {
            int sig = WTERMSIG(status);
            double cpu = double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                         1e-6 * double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
            if (sig == SIGXCPU || (sig == SIGKILL && cpu >= lim.cpu_seconds))
                return "took too long (more than its " + std::to_string(lim.cpu_seconds) + " s of CPU time; stopped)";
            const char* abbrev = sigabbrev_np(sig);
            std::string why = "crashed with signal " + std::to_string(sig) + (abbrev ? std::string(" (SIG") + abbrev + ")" : "");
            if (sig == SIGKILL) why = "was killed (signal 9; by the system's out-of-memory killer?)";
            return why + last_line();
        }
        return "exited with status " + std::to_string(WEXITSTATUS(status)) + last_line();
    }

    std::string last_line() const {
        std::string s = stderr_tail;
        while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
        size_t p = s.rfind('\n');
        s = p == std::string::npos ? s : s.substr(p + 1);
        if (s.size() > 300) s = s.substr(0, 300) + "...";
        return s.empty() ? "" : "; its last message: " + s;
    }
};

void ChildInput::read_exact(uint8_t* p, size_t n) {
    ChildRunner& r = *run_;
    while (n > 0) {
        ssize_t k = r.res >= 0 ? ::read(r.res, p, n) : 0;
        if (k > 0) {
            p += k;
            n -= size_t(k);
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k == 0) r.res_eof = true;
        if (k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) || r.exited)
            invalid_child_message("its result ends early (%zu bytes missing)", n);
        r.wait_for_activity();
    }
}

uint64_t ChildInput::header(uint16_t kind) {
    FrameHeader h;
    read_exact(reinterpret_cast<uint8_t*>(&h), sizeof h);
    if (h.magic != kMagic || h.version != kVersion)
        invalid_child_message("bad frame header (magic %08x, version %u)", h.magic, unsigned(h.version));
    if (h.kind == kFrameError || h.kind == kFrameOutOfMemory) {
        if (h.length > kMaxErrorText) invalid_child_message("error text of %llu bytes", (unsigned long long)h.length);
        std::string text(size_t(h.length), '\0');
        read_exact(reinterpret_cast<uint8_t*>(text.data()), text.size());
        for (char& c : text)
            if ((unsigned char)c < 0x20 && c != '\n') c = ' ';
        throw ChildReportedError{h.kind == kFrameOutOfMemory, text};
    }
    if (h.kind != kind) invalid_child_message("frame of kind %u where %u was expected", unsigned(h.kind), unsigned(kind));
    return h.length;
}

std::vector<uint8_t> ChildInput::receive(uint16_t kind, uint64_t max_bytes) {
    uint64_t n = header(kind);
    if (n > max_bytes)
        invalid_child_message("frame of %llu bytes, more than the %llu expected", (unsigned long long)n,
                              (unsigned long long)max_bytes);
    std::vector<uint8_t> body(static_cast<size_t>(n));
    read_exact(body.data(), body.size());
    return body;
}

void ChildInput::receive_into(uint16_t kind, std::span<uint8_t> out) {
    uint64_t n = header(kind);
    if (n != out.size())
        invalid_child_message("frame of %llu bytes where %zu were expected", (unsigned long long)n, out.size());
    read_exact(out.data(), out.size());
}

void invalid_child_message(const char* fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    throw InvalidChildMessage(buf);
}

std::string MessageReader::str() {
    size_t n = count(1);
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return s;
}

size_t MessageReader::count(size_t element_bytes) {
    uint32_t n = u32();
    if (uint64_t(n) * element_bytes > b_.size() - pos_)
        invalid_child_message("a count of %u elements runs past the end of the message", n);
    return n;
}

void MessageReader::end() const {
    if (pos_ != b_.size()) invalid_child_message("%zu extra bytes at the end of a message", b_.size() - pos_);
}

void run_isolated(const char* what, const std::string& name, const ChildLimits& lim,
                  const std::function<void(ChildOutput&)>& child, const std::function<void(ChildInput&)>& parent) {
    ChildRunner run;
    int res_p[2], err_p[2];
    if (pipe2(res_p, O_CLOEXEC) != 0) fail("%s: cannot start the %s: pipe: %s", name.c_str(), what, std::strerror(errno));
    if (pipe2(err_p, O_CLOEXEC) != 0) {
        int e = errno;
        ::close(res_p[0]);
        ::close(res_p[1]);
        fail("%s: cannot start the %s: pipe: %s", name.c_str(), what, std::strerror(e));
    }
    run.res = res_p[0];
    run.err = err_p[0];
    fcntl(res_p[1], F_SETPIPE_SZ, 1 << 20);  // fewer round trips for large images; best effort
    pid_t parent_pid = getpid();
    pid_t pid = fork();
    if (pid == 0) ChildRunner::child_main(res_p[1], err_p[1], parent_pid, lim, child);
    int fork_errno = errno;
    ::close(res_p[1]);
    ::close(err_p[1]);
    if (pid < 0) fail("%s: cannot start the %s: fork: %s", name.c_str(), what, std::strerror(fork_errno));
    run.pid = pid;
    run.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(lim.wall_seconds);
    fcntl(run.res, F_SETFL, O_NONBLOCK);
    fcntl(run.err, F_SETFL, O_NONBLOCK);
    run.pidfd = int(syscall(SYS_pidfd_open, pid, 0));  // close-on-exec; -1 on old kernels: polled instead

    ChildInput in;
    run.attach(in);
    std::string invalid;
    std::optional<ChildReportedError> reported;
    std::exception_ptr parent_error;
    try {
        parent(in);
        run.wait_exit();
    } catch (const InvalidChildMessage& e) {
        invalid = e.what();
    } catch (const ChildReportedError& e) {
        reported = e;
    } catch (const ChildTimedOut&) {
    } catch (...) {
        parent_error = std::current_exception();
    }
    if (!run.reaped) {
        // A child that sent its error, or closed its end of the pipe, is ending by itself: wait for
        // it, so that its real exit status (a signal) is what gets reported. One still sending is
        // not waited for.
        if ((reported || run.res_eof || run.exited) && !run.timed_out) {
            try {
                run.wait_exit();
            } catch (const ChildTimedOut&) {
            }
        }
        if (!run.reaped) {
            run.kill_child();
            run.reap();
            if (run.err >= 0) run.drain(run.err, true);
        }
    }

    std::string why = run.abnormal_end(lim);
    if (!why.empty()) fail("%s failed on %s: %s", what, name.c_str(), why.c_str());
    if (parent_error) std::rethrow_exception(parent_error);
    if (reported) {
        if (reported->out_of_memory) {
            std::string text = reported->text;  // without the file's name, which the message starts with
            for (size_t p; (p = text.find(name + ": ")) != std::string::npos;) text.erase(p, name.size() + 2);
            fail("%s failed on %s: out of memory (%s)", what, name.c_str(), text.c_str());
        }
        if (reported->text.find(name) == std::string::npos) fail("%s: %s", name.c_str(), reported->text.c_str());
        throw Error(reported->text);
    }
    if (!invalid.empty()) fail("%s failed on %s: it sent an invalid result (%s)", what, name.c_str(), invalid.c_str());
    if (run.extra_bytes)
        fail("%s failed on %s: it sent an invalid result (%llu bytes after the end)", what, name.c_str(),
             (unsigned long long)run.extra_bytes);
}

}  // namespace hg::imaging
