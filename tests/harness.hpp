// Test harness: start the real programs, wait on events (a line of output, a process exit),
// always with a bound, and clean up every process a test started.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <cstdint>
#include <map>
#include <mutex>
#include <ostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/test/tools/assertion_result.hpp>

#include "common/sockets.hpp"  // unique_fd

#include <sys/types.h>

namespace poetry::test {

using namespace std::chrono_literals;

// Built with a sanitizer: memory figures then measure the sanitizer's bookkeeping, not ours.
// Under ThreadSanitizer, signals are also delivered late (its runtime defers them until the
// receiving thread next enters it), so the promptness of Ctrl-C is not measurable there.
#if defined(__has_feature)  // clang
#define POETRY_HAS_FEATURE(x) __has_feature(x)
#else
#define POETRY_HAS_FEATURE(x) 0
#endif
#if defined(__SANITIZE_THREAD__) || POETRY_HAS_FEATURE(thread_sanitizer)
constexpr bool thread_sanitizer_build = true;
#else
constexpr bool thread_sanitizer_build = false;
#endif
#if defined(__SANITIZE_ADDRESS__) || POETRY_HAS_FEATURE(address_sanitizer)
constexpr bool sanitized_build = true;
#else
constexpr bool sanitized_build = thread_sanitizer_build;
#endif

// The models this build has, in course order, and where their programs are.
std::vector<std::string> models();
std::string build_dir();
std::string program(const std::string& model, const std::string& name);  // "server" or "client"
std::string source_dir();

// What the test does with the child's stdout once its first line has come: go on reading it
// (the default), close the pipe (the reader has gone, as with `| head -1`), stop reading
// but keep it open (a paused `| less`: the pipe fills up), or read it slowly, about 50 kB/s
// (a slow terminal, `| pv -L 50k`).
enum class stdout_reader { keeps_reading, closes_after_first_line, stalls_after_first_line, reads_slowly };

struct spawn_options {
  // RLIMIT_NOFILE for the child: its soft limit (the hard one rises to it if lower); with
  // max_files_hard, the hard limit too, where a program that raises its own soft limit stops.
  std::optional<unsigned long> max_files, max_files_hard;
  std::optional<unsigned long> max_memory;  // RLIMIT_AS for the child, in bytes
  stdout_reader reader = stdout_reader::keeps_reading;
  bool stdout_closed = false;       // the child starts with descriptor 1 closed
  bool default_sigpipe = true;      // the child starts with SIGPIPE at SIG_DFL
  bool stdin_pipe = false;          // give the child a pipe as stdin (else /dev/null)
  bool stdout_nonblocking = false;  // the child's stdout pipe is in non-blocking mode (O_NONBLOCK)
  bool sigint_ignored = false;      // the child starts with SIGINT ignored (a background job, nohup)
};

// A running program whose stdout and stderr are collected in the background.
class child {
public:
  explicit child(std::vector<std::string> argv, spawn_options options = {});
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  // SIGKILL if still running; then the rest of its process group goes too (every child starts a
  // group of its own: whatever it started and left behind), and the readers stop, bounded.
  ~child();

  pid_t pid() const { return pid_; }
  // Waits until stdout holds a line starting with prefix; returns it (nullopt on timeout or exit).
  std::optional<std::string> wait_for_line(const std::string& prefix, std::chrono::milliseconds bound);
  // Waits until stdout (or stderr) contains text. Returns false on timeout.
  bool wait_for_output(const std::string& text, std::chrono::milliseconds bound, bool on_stderr = false);
  // Waits for the exit; returns the exit status (128+N for a signal), nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds bound);
  void signal(int sig);
  void kill_all();  // SIGKILL to the child and everything in its process group
  void close_stdin();
  void write_stdin(const std::string& data);
  std::string out();  // everything printed so far
  std::string err();
  bool running();

private:
  void collect(int fd, std::string& into, stdout_reader reader);
  void reap();  // kills what is left of the group, then reaps the ended child
  pid_t pid_ = -1;
  int pidfd_ = -1;
  int stdin_fd_ = -1;
  int stalled_fd_ = -1;  // a stdout pipe nobody reads any more
  std::optional<int> status_;
  bool reaped_ = false;
  int stop_fd_ = -1;  // an eventfd: written when the readers must stop
  std::mutex mutex_;
  std::condition_variable changed_;
  std::string out_, err_;
  bool out_closed_ = false, err_closed_ = false;
  std::thread out_reader_, err_reader_;
};

// A connection to 127.0.0.1:port whose receive buffer is size bytes, set before connecting (so
// the kernel does not grow it): what a slow reader holds back stays small, and the rest of what
// the server wrote waits on the server's side.
poetry::unique_fd connect_small(std::uint16_t port, int size = 65536);

// How a server names the client of a connected socket: the socket's own address ("127.0.0.1:51234").
std::string client_name(int fd);

// The "Lost" lines of a server's output.
std::vector<std::string> lost_lines(const std::string& out);

// The "Lost" lines of a server's output for a client that had the whole poem ("after N of N
// bytes"): a reset after the last byte, which can throw away what the client has not read.
std::vector<std::string> lost_after_whole_poem(const std::string& out, std::size_t poem_bytes);

// Spawn options with a descriptor limit that leaves room for this many clients at once.
spawn_options room_for(std::size_t clients);

// A server of one model on port 0; the constructor waits for "Serving … on port N.".
class server {
public:
  server(const std::string& model, const std::string& poem_file, std::vector<std::string> extra = {},
         spawn_options options = {});
  ~server();  // SIGTERM, bounded wait, SIGKILL as a last resort
  std::uint16_t port() const { return port_; }
  std::string address() const { return std::to_string(port_); }
  child& process() { return process_; }

private:
  child process_;
  std::uint16_t port_ = 0;
};

struct result {
  int status = -1;  // exit status
  std::string out, err;
  double seconds = 0;
};

// How long run() gives a program unless told otherwise: the tests' programs take well under a
// second each, so this is generous on a busy machine, and short enough that a model that leaves
// a client waiting (a broken exercise) fails its tests fast.
constexpr std::chrono::milliseconds program_bound = sanitized_build ? 60s : 20s;

// Runs a program to its end. One that outlives the bound is killed (its whole process group) and
// ends the test case with a failure that names it (BOOST_FAIL).
result run(std::vector<std::string> argv, std::chrono::milliseconds bound = program_bound, spawn_options options = {});
result run_client(const std::string& model, std::vector<std::string> args,
                  std::chrono::milliseconds bound = program_bound);

// A temporary folder, removed with everything in it at the end of the test.
class temp_dir {
public:
  temp_dir();
  ~temp_dir();
  const std::string& path() const { return path_; }
  std::string write(const std::string& name, const std::string& content) const;  // returns the file's path

private:
  std::string path_;
};

std::string read_file(const std::string& path);

// For BOOST_TEST(same_bytes(got, poem)): a failure says "got N of M bytes, first difference at byte
// K", never the bytes themselves (a binary poem in a terminal is noise and colour codes).
boost::test_tools::assertion_result same_bytes(const std::string& got, const std::string& expected);

// Test poems: ASCII, UTF-8 split across chunks, every byte value, empty, and a large one.
std::string ascii_poem();
std::string utf8_poem();
std::string binary_poem();
std::string large_poem(std::size_t bytes);

// The poems every byte-for-byte test runs through, by name.
struct poem_kind {
  const char* name;
  std::string (*make)();
};
std::ostream& operator<<(std::ostream& os, const poem_kind& kind);
extern const std::vector<poem_kind> poem_kinds;

// CPU time (user + system) a process has used, in seconds, from /proc.
double cpu_seconds(pid_t pid);

// The CPU time each thread of a running process has used so far, in seconds, busiest first.
std::vector<double> thread_cpu_seconds(pid_t pid);

// A number from a running process's /proc/PID/status, by its field name ("VmHWM", "Threads"),
// e.g. a size in KiB; 0 once the process has gone.
long status_field(pid_t pid, const std::string& name);

// The file status flags of a process's descriptor (the octal "flags:" line of
// /proc/PID/fdinfo/FD, e.g. to see O_NONBLOCK); -1 if it cannot be read.
long file_flags(pid_t pid, int fd);

// Peak resident memory of a running process (VmHWM in /proc/PID/status), in KiB.
long peak_kib(pid_t pid);

// How many times text occurs in all, without overlaps.
std::size_t occurrences(const std::string& all, const std::string& text);

// The calls counted in an `strace -c` summary file: system call name -> number of calls.
std::map<std::string, long> strace_counts(const std::string& summary_file);

// How many descriptors a process has open (the entries of /proc/PID/fd); 0 once it has gone.
std::size_t open_files(pid_t pid);

// Checks condition until it holds or bound has passed; returns whether it held. For what sends
// no event to wait on, such as /proc: it polls, with a bound.
bool poll_until(const std::function<bool()>& condition, std::chrono::milliseconds bound);

// Faults on demand for LD_PRELOAD (tests/faults.cpp: POETRY_SLOW_NAME, POETRY_FAILED_ACCEPTS),
// and the start of a command line that runs a program with it and those variables set.
std::string faults_library();
std::vector<std::string> with_faults(const std::vector<std::string>& variables);

// The race's load generator (<build>/bench/loadgen): many connections at once, every byte checked.
std::string loadgen();

// Its one summary line, "clients=N ok=N failed=N wall=S ...", as name -> value.
std::map<std::string, double> load_fields(const std::string& out);

}  // namespace poetry::test
