// Running the decoder of an untrusted file in a child process.
//
// GDCM (as Debian builds it) keeps assert() enabled, and hostile files reach some of its asserts
// (abort) or make it allocate what a length field declares (gigabytes from a 38 KB file). Instead
// of changing how the whole process handles asserts or allocations, the work on one file runs in a
// fork()ed child with resource limits; whatever the file does to GDCM, the caller's process only
// sees an hg::Error ("DICOM decoder failed on FILE: assertion ... / out of memory / took too long /
// crashed with signal N").
//
// The child:
//   - is a fork() of the calling thread only: it does no work that needs other threads (no locks
//     that another thread of the parent may have held at the fork, no thread pool); glibc's malloc
//     is fork-safe. Signal dispositions are reset to the default and the signal mask cleared (an
//     embedder's handlers do not run in it), it dies with its parent (PR_SET_PDEATHSIG), and it
//     keeps only its two pipes (close_range), so other fds of the process never leak into it.
//   - runs under setrlimit: RLIMIT_AS = its address-space size at the fork + ChildLimits::memory_bytes
//     (relative, so it also works under AddressSanitizer, whose shadow memory reserves terabytes of
//     address space before the fork), RLIMIT_CPU, RLIMIT_CORE = 0 and no core dump at all
//     (PR_SET_DUMPABLE 0). An allocation that fails there throws std::bad_alloc and is reported
//     as "out of memory".
//   - writes its result to a pipe as length-prefixed, versioned frames, and ends with _exit (no
//     atexit handlers, no flushing of the parent's stdio buffers). Its stdout and stderr go to a
//     second pipe; the parent keeps the last 32 KiB to explain a crash (the assert's message).
//
// The parent reads the frames while the child runs (poll with a deadline on both pipes and on a
// pidfd of the child), treats them as untrusted (each frame's length must be what the caller
// expects, checked before anything is allocated), reaps the child with wait4 and turns every
// abnormal end into an hg::Error naming the file. No zombies (an RAII owner kills and reaps the
// child on every path), no leaked fds (O_CLOEXEC), EINTR retried, SIGPIPE impossible in the parent
// (it never writes to the child). In sanitizer builds a sanitizer report from the child (other
// than out of memory) is copied to stderr and the parent aborts, so that such a bug is not
// mistaken for a bad file.
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace hg::imaging {

// Where a decoder of untrusted files runs. Subprocess is the default of every public API.
// InProcess is for the libFuzzer target and for tests of the decoding logic: it relies on our own
// pre-checks only (and, in sanitizer builds, on the sanitizer's allocation limits).
enum class DecodeIsolation { Subprocess, InProcess };

// Resource limits of one child. Memory is counted above the address space the child starts with.
struct ChildLimits {
    uint64_t memory_bytes = uint64_t(512) << 20;     // RLIMIT_AS soft limit
    uint64_t memory_bytes_max = uint64_t(16) << 30;  // RLIMIT_AS hard limit (raise_memory_limit's ceiling)
    int cpu_seconds = 10;                            // RLIMIT_CPU: SIGXCPU then, SIGKILL one second later
    int wall_seconds = 30;                           // the parent kills the child after this
};

// A frame's body that the parent does not accept (bad length, bad field): the child is treated as
// failed ("sent an invalid result").
struct InvalidChildMessage : std::runtime_error {
    using std::runtime_error::runtime_error;
};
[[noreturn]] void invalid_child_message(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Frame kinds below 16 are the runner's own (error reports); callers use 16 and above.
constexpr uint16_t kFirstUserFrame = 16;

// The child's end.
class ChildOutput {
public:
    // One frame: a 16-byte header (magic, version, kind, length) and the parts, in order.
    void send(uint16_t kind, std::initializer_list<std::span<const uint8_t>> parts);
    // Raises the soft memory limit to `bytes` above the starting size (at most memory_bytes_max).
    void raise_memory_limit(uint64_t bytes);
    // The soft memory limit above the starting size now (0: none could be set).
    uint64_t memory_limit() const;

private:
    friend struct ChildRunner;
    int fd_ = -1;
    uint64_t base_ = 0, max_ = 0;
    bool limited_ = false;
};

// The parent's end.
class ChildInput {
public:
    // The next frame, which must be of `kind` and at most max_bytes long.
    std::vector<uint8_t> receive(uint16_t kind, uint64_t max_bytes);
    // The next frame, which must be of `kind` and exactly out.size() bytes long, into `out`.
    void receive_into(uint16_t kind, std::span<uint8_t> out);

private:
    friend struct ChildRunner;
    uint64_t header(uint16_t kind);
    void read_exact(uint8_t* p, size_t n);
    struct ChildRunner* run_ = nullptr;
};

// Forks a child that runs child(out) and exits; the parent runs parent(in), which reads and
// checks what the child sends, then reaps the child. If child() throws, the error travels to the
// parent instead of the frames parent() waits for, and is thrown there: an hg::Error with its text
// (a std::bad_alloc, or any failure after an allocation failed, as "out of memory"). Abnormal ends
// become an hg::Error "<what> failed on <name>: ...". Safe to call from several threads at once.
void run_isolated(const char* what, const std::string& name, const ChildLimits& limits,
                  const std::function<void(ChildOutput&)>& child, const std::function<void(ChildInput&)>& parent);

// Little frame bodies: native byte order (parent and child are the same program).
class MessageWriter {
public:
    void u32(uint32_t v) { put(&v, 4); }
    void i32(int32_t v) { put(&v, 4); }
    void u64(uint64_t v) { put(&v, 8); }
    void f64(double v) { put(&v, 8); }
    void str(const std::string& s) {
        u32(uint32_t(s.size()));
        put(s.data(), s.size());
    }
    std::span<const uint8_t> bytes() const { return b_; }

private:
    void put(const void* p, size_t n) {
        const uint8_t* c = static_cast<const uint8_t*>(p);
        b_.insert(b_.end(), c, c + n);
    }
    std::vector<uint8_t> b_;
};

// Every read is bounds-checked; running past the end throws InvalidChildMessage.
class MessageReader {
public:
    explicit MessageReader(std::span<const uint8_t> b) : b_(b) {}
    uint32_t u32() { return get<uint32_t>(); }
    int32_t i32() { return get<int32_t>(); }
    uint64_t u64() { return get<uint64_t>(); }
    double f64() { return get<double>(); }
    std::string str();
    // A u32 element count whose elements (element_bytes each) must fit in what is left.
    size_t count(size_t element_bytes);
    void end() const;  // everything was read

private:
    template <typename T>
    T get() {
        if (b_.size() - pos_ < sizeof(T)) invalid_child_message("message ends early (byte %zu)", pos_);
        T v;
        __builtin_memcpy(&v, b_.data() + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    std::span<const uint8_t> b_;
    size_t pos_ = 0;
};

}  // namespace hg::imaging
