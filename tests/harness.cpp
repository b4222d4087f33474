#include "harness.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cctype>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <utility>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>

namespace poetry::test {

std::vector<std::string> models()
{
  // POETRY_TEST_MODELS=blocking,threaded narrows a run to some models (the TSan build uses it).
  const char* only = std::getenv("POETRY_TEST_MODELS");
  std::string wanted = only ? "," + std::string(only) + "," : "";
  std::vector<std::string> result;
  std::stringstream list(POETRY_MODELS);
  for (std::string model; std::getline(list, model, ',');)
    if (!model.empty() && (wanted.empty() || wanted.find("," + model + ",") != std::string::npos))
      result.push_back(model);
  return result;
}

std::string build_dir() { return POETRY_BUILD_DIR; }
std::string source_dir() { return POETRY_SOURCE_DIR; }
std::string program(const std::string& model, const std::string& name)
{
  return build_dir() + "/" + model + "/" + name;
}

namespace {

// Every child starts a process group of its own (its PID is the group's ID), and stays in this
// table from its start until it is reaped: until then the ID cannot name anyone else's group.
// A test that ends, fails or is interrupted kills each group whole, so nothing a test started
// outlives it: not a server, not what a script it ran started (a peer's sleep, a tour's clients).
std::array<std::atomic<pid_t>, 1024> live_groups{};

void track(pid_t group)
{
  for (auto& slot : live_groups) {
    pid_t empty = 0;
    if (slot.compare_exchange_strong(empty, group)) return;
  }
}

void untrack(pid_t group)
{
  for (auto& slot : live_groups) {
    pid_t mine = group;
    if (slot.compare_exchange_strong(mine, 0)) return;
  }
}

// Async-signal-safe: kill(2) only.
void kill_live_groups()
{
  for (auto& slot : live_groups)
    if (pid_t group = slot.load(); group > 0) ::kill(-group, SIGKILL);
}

// SIGINT, SIGTERM, SIGHUP (Ctrl-C in scripts/test, ctest's or a user's kill): every group this
// test started goes first, then the test ends of the signal as it would have without us.
extern "C" void end_children_and_die(int sig)
{
  kill_live_groups();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

// Installed before main, in every program that links the harness; at a normal exit (also one
// that leaves a child behind by an exception) the same sweep runs.
struct children_end_with_the_test {
  children_end_with_the_test()
  {
    struct sigaction action {};
    action.sa_handler = end_children_and_die;
    sigemptyset(&action.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &action, nullptr);
  }
  ~children_end_with_the_test() { kill_live_groups(); }
} children_end_with_the_test_;

}  // namespace

child::child(std::vector<std::string> argv, spawn_options options)
{
  int out[2], err[2], in[2] = {-1, -1};
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  if (options.stdin_pipe && ::pipe2(in, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  rlimit files{};
  if (options.max_files) {
    rlimit current{};
    ::getrlimit(RLIMIT_NOFILE, &current);
    files.rlim_cur = *options.max_files;
    files.rlim_max = std::max<rlim_t>(options.max_files_hard.value_or(current.rlim_max), *options.max_files);
  }
  rlimit memory{};
  if (options.max_memory) memory.rlim_cur = memory.rlim_max = *options.max_memory;
  // No SIGINT or SIGTERM between the fork and the child's entry in live_groups: it would be missed.
  sigset_t ending, before;
  sigemptyset(&ending);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&ending, sig);
  ::pthread_sigmask(SIG_BLOCK, &ending, &before);
  pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    // In the child: only async-signal-safe calls until exec. A group of its own, which the test
    // kills whole; and if the test itself is killed outright (SIGKILL), the child goes with it.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(options.stdin_pipe ? in[0] : devnull, STDIN_FILENO);
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(err[1], STDERR_FILENO);
    if (options.stdout_closed) ::close(STDOUT_FILENO);
    if (options.stdout_nonblocking) ::fcntl(STDOUT_FILENO, F_SETFL, O_NONBLOCK);
    if (options.max_files) ::setrlimit(RLIMIT_NOFILE, &files);
    if (options.max_memory) ::setrlimit(RLIMIT_AS, &memory);
    if (options.default_sigpipe) ::signal(SIGPIPE, SIG_DFL);
    // A test started from a script in the background inherits SIGINT ignored; the programs
    // under test start as they would from a terminal.
    ::signal(SIGINT, options.sigint_ignored ? SIG_IGN : SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  if (pid_ > 0) {
    ::setpgid(pid_, pid_);  // as the child does: whichever runs first
    track(pid_);
  }
  ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
  if (pid_ < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
  ::close(out[1]);
  ::close(err[1]);
  if (options.stdin_pipe) {
    ::close(in[0]);
    stdin_fd_ = in[1];
  }
  pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
  out_reader_ = std::thread([this, fd = out[0], reader = options.reader] { collect(fd, out_, reader); });
  err_reader_ = std::thread([this, fd = err[0]] { collect(fd, err_, stdout_reader::keeps_reading); });
}

void child::collect(int fd, std::string& into, stdout_reader reader)
{
  char buffer[65536];
  bool slowly = reader == stdout_reader::reads_slowly, first = true;
  for (;;) {
    // A slow reader takes 1 KiB every 20 ms (a pace to simulate, not an event to wait for).
    if (slowly && !std::exchange(first, false)) std::this_thread::sleep_for(20ms);
    // Bounded from outside: the destructor stops a reader whose pipe something still holds open.
    pollfd ready[2] = {{fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(ready, 2, -1) < 0 && errno != EINTR) break;
    if (ready[1].revents != 0) {
      std::lock_guard lock(mutex_);
      (&into == &out_ ? out_closed_ : err_closed_) = true;
      changed_.notify_all();
      break;
    }
    if (ready[0].revents == 0) continue;
    ssize_t n = ::read(fd, buffer, slowly ? 1024 : sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    // The first line is in: stop reading here if asked to. The pipe closes before anyone hears
    // of the line, so whatever the child writes after it finds the reader gone.
    bool stop = n > 0 && reader != stdout_reader::keeps_reading && !slowly &&
                std::memchr(buffer, '\n', static_cast<std::size_t>(n));
    if (stop && reader == stdout_reader::closes_after_first_line) {
      ::close(fd);
      fd = -1;
    }
    std::lock_guard lock(mutex_);
    if (n > 0) into.append(buffer, static_cast<std::size_t>(n));
    if (n <= 0 || stop) {
      (&into == &out_ ? out_closed_ : err_closed_) = true;
      if (stop) std::swap(stalled_fd_, fd);  // kept open, unread, until the child is gone
      changed_.notify_all();
      break;
    }
    changed_.notify_all();
  }
  if (fd >= 0) ::close(fd);
}

child::~child()
{
  if (running()) {
    ::kill(-pid_, SIGKILL);
    wait(10s);
  }
  reap();
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  // The readers end when the pipes close, which is when the child and its group are gone; a
  // process that left the group and still holds a pipe gets 5 s, then the readers stop anyway.
  {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, 5s, [&] { return out_closed_ && err_closed_; });
  }
  std::uint64_t one = 1;
  [[maybe_unused]] auto written = ::write(stop_fd_, &one, sizeof one);
  if (out_reader_.joinable()) out_reader_.join();
  if (err_reader_.joinable()) err_reader_.join();
  if (pidfd_ >= 0) ::close(pidfd_);
  if (stalled_fd_ >= 0) ::close(stalled_fd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

void child::reap()
{
  if (!status_ || reaped_) return;
  // The child has ended but is not reaped yet, so its group's ID is still its own: whatever it
  // started and left behind in the group (a script's background jobs) ends here too.
  ::kill(-pid_, SIGKILL);
  while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {}
  untrack(pid_);
  reaped_ = true;
}

std::optional<std::string> child::wait_for_line(const std::string& prefix, std::chrono::milliseconds bound)
{
  std::unique_lock lock(mutex_);
  std::optional<std::string> found;
  changed_.wait_for(lock, bound, [&] {
    std::size_t at = 0;
    while (at < out_.size()) {
      auto end = out_.find('\n', at);
      if (end == std::string::npos) break;
      if (out_.compare(at, prefix.size(), prefix) == 0) {
        found = out_.substr(at, end - at);
        return true;
      }
      at = end + 1;
    }
    return out_closed_;
  });
  return found;
}

bool child::wait_for_output(const std::string& text, std::chrono::milliseconds bound, bool on_stderr)
{
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, bound, [&] { return (on_stderr ? err_ : out_).find(text) != std::string::npos; });
}

std::optional<int> child::wait(std::chrono::milliseconds bound)
{
  if (status_) return status_;
  pollfd p{pidfd_, POLLIN, 0};
  auto deadline = std::chrono::steady_clock::now() + bound;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    int rc = ::poll(&p, 1, static_cast<int>(std::max<long long>(0, left.count())));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) return std::nullopt;
    break;
  }
  // Its status, but not reaped yet (WNOWAIT): see reap().
  siginfo_t info{};
  while (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR) {}
  status_ = info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status;
  // Let the readers finish collecting what the program printed before it ended.
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, 5s, [&] { return out_closed_ && err_closed_; });
  return status_;
}

void child::signal(int sig)
{
  if (!status_) ::kill(pid_, sig);
}

void child::kill_all()
{
  if (!reaped_) ::kill(-pid_, SIGKILL);
}

void child::close_stdin()
{
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  stdin_fd_ = -1;
}

void child::write_stdin(const std::string& data)
{
  std::string_view left = data;
  while (!left.empty() && stdin_fd_ >= 0) {
    ssize_t n = ::write(stdin_fd_, left.data(), left.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    left.remove_prefix(static_cast<std::size_t>(n));
  }
}

std::string child::out()
{
  std::lock_guard lock(mutex_);
  return out_;
}

std::string child::err()
{
  std::lock_guard lock(mutex_);
  return err_;
}

bool child::running()
{
  if (status_) return false;
  return !wait(0ms).has_value();
}

poetry::unique_fd connect_small(std::uint16_t port, int size)
{
  poetry::unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  BOOST_TEST_REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) == 0,
                     "cannot connect to the server: " << std::strerror(errno));
  return fd;
}

std::string client_name(int fd)
{
  sockaddr_storage local{};
  socklen_t length = sizeof local;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length);
  return poetry::to_string(reinterpret_cast<const sockaddr*>(&local));
}

std::vector<std::string> lost_lines(const std::string& out)
{
  std::vector<std::string> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("Lost ", 0) == 0) lines.push_back(line);
  return lines;
}

std::vector<std::string> lost_after_whole_poem(const std::string& out, std::size_t poem_bytes)
{
  std::string whole = "after " + std::to_string(poem_bytes) + " of " + std::to_string(poem_bytes) + " bytes";
  std::vector<std::string> lines = lost_lines(out);
  std::erase_if(lines, [&](const std::string& line) { return line.find(whole) == std::string::npos; });
  return lines;
}

spawn_options room_for(std::size_t clients)
{
  spawn_options options;
  options.max_files = clients + 64;
  return options;
}

server::server(const std::string& model, const std::string& poem_file, std::vector<std::string> extra,
               spawn_options options)
  : process_(
      [&] {
        std::vector<std::string> argv{program(model, "server")};
        if (std::find(extra.begin(), extra.end(), "-p") == extra.end()) argv.insert(argv.end(), {"--port", "0"});
        argv.insert(argv.end(), extra.begin(), extra.end());
        argv.push_back(poem_file);
        return argv;
      }(),
      options)
{
  auto line = process_.wait_for_line("Serving ", 20s);
  if (!line) {
    process_.wait(5s);
    throw std::runtime_error(model + " server did not start: " + process_.err());
  }
  auto at = line->rfind("on port ");
  if (at == std::string::npos) throw std::runtime_error("unexpected first line: " + *line);
  port_ = static_cast<std::uint16_t>(std::stoi(line->substr(at + 8)));
}

server::~server()
{
  process_.signal(SIGTERM);
  if (!process_.wait(10s)) process_.kill_all();
}

result run(std::vector<std::string> argv, std::chrono::milliseconds bound, spawn_options options)
{
  std::string command;  // for the message, with this build's folder left out
  for (const auto& word : argv) {
    std::string shown = word.rfind(build_dir() + "/", 0) == 0 ? word.substr(build_dir().size() + 1) : word;
    command += (command.empty() ? "" : " ") + shown;
  }
  auto start = std::chrono::steady_clock::now();
  child c(std::move(argv), options);
  auto status = c.wait(bound);
  result r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!status) {
    c.kill_all();
    c.wait(10s);
    // A program that outlives its bound ends the test case, in one line: what the test would
    // check next would only wait for the same fault again (a server that never finishes a poem
    // makes every later client of the test wait for its whole bound too).
    std::string err = c.err();
    while (!err.empty() && err.back() == '\n') err.pop_back();
    std::string last = err.substr(err.rfind('\n') == std::string::npos ? 0 : err.rfind('\n') + 1);
    BOOST_FAIL(command.substr(0, 120) << ": still running after " << std::chrono::duration<double>(bound).count()
                                      << " s, killed" << (last.empty() ? "" : "; its last line: ")
                                      << last.substr(0, 120));
  }
  r.status = *status;
  r.out = c.out();
  r.err = c.err();
  return r;
}

result run_client(const std::string& model, std::vector<std::string> args, std::chrono::milliseconds bound)
{
  args.insert(args.begin(), program(model, "client"));
  return run(std::move(args), bound);
}

temp_dir::temp_dir()
{
  std::string pattern = (std::filesystem::temp_directory_path() / "poetry-test-XXXXXX").string();
  if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

temp_dir::~temp_dir()
{
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string temp_dir::write(const std::string& name, const std::string& content) const
{
  std::string file = path_ + "/" + name;
  std::ofstream(file, std::ios::binary) << content;
  return file;
}

std::string read_file(const std::string& path)
{
  std::ifstream in(path, std::ios::binary);
  std::ostringstream all;
  all << in.rdbuf();
  return all.str();
}

boost::test_tools::assertion_result same_bytes(const std::string& got, const std::string& expected)
{
  if (got == expected) return true;
  auto at = std::mismatch(got.begin(), got.end(), expected.begin(), expected.end()).first - got.begin();
  boost::test_tools::assertion_result result(false);
  result.message() << "got " << got.size() << " of " << expected.size() << " bytes, first difference at byte " << at;
  return result;
}

std::string ascii_poem()
{
  return "Where, like a pillow on a bed,\nA pregnant bank swell'd up to rest\n"
         "The violet's reclining head,\nSat we two, one another's best.\n";
}

std::string utf8_poem()
{
  // Chunks of 20 bytes split these three-byte characters in the middle.
  return "床前明月光，\n疑是地上霜。\n举头望明月，\n低头思故乡。\n";
}

std::string binary_poem()
{
  std::string all;
  for (int round = 0; round < 3; ++round)
    for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(round % 2 ? 255 - b : b));
  return all;
}

std::string large_poem(std::size_t bytes)
{
  std::string poem(bytes, '\0');
  std::uint32_t x = 2463534242u;
  for (auto& c : poem) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x);
  }
  return poem;
}

std::ostream& operator<<(std::ostream& os, const poem_kind& kind) { return os << kind.name; }

const std::vector<poem_kind> poem_kinds = {
  {"ascii", ascii_poem},
  {"utf8", utf8_poem},
  {"binary", binary_poem},
  {"empty", [] { return std::string(); }},
};

long status_field(pid_t pid, const std::string& name)
{
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind(name + ":", 0) == 0) return std::stol(line.substr(name.size() + 1));
  return 0;
}

long peak_kib(pid_t pid) { return status_field(pid, "VmHWM"); }

std::size_t occurrences(const std::string& all, const std::string& text)
{
  std::size_t n = 0;
  for (auto at = all.find(text); at != std::string::npos; at = all.find(text, at + text.size())) ++n;
  return n;
}

std::map<std::string, long> strace_counts(const std::string& summary_file)
{
  std::map<std::string, long> calls;
  std::istringstream summary(read_file(summary_file));
  for (std::string line; std::getline(summary, line);) {
    std::istringstream fields(line);
    std::vector<std::string> words{std::istream_iterator<std::string>(fields), {}};
    // "% time  seconds  usecs/call  calls  [errors]  syscall"
    if (words.size() >= 5 && std::isdigit(static_cast<unsigned char>(words[3][0])) &&
        std::isalpha(static_cast<unsigned char>(words.back()[0])) && words.back() != "total")
      calls[words.back()] = std::stol(words[3]);
  }
  return calls;
}

std::size_t open_files(pid_t pid)
{
  std::error_code ec;
  auto fds = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
  if (ec) return 0;
  return static_cast<std::size_t>(std::distance(fds, std::filesystem::directory_iterator()));
}

bool poll_until(const std::function<bool()>& condition, std::chrono::milliseconds bound)
{
  auto deadline = std::chrono::steady_clock::now() + bound;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);  // polling a condition that sends no event, with a bound
  }
  return true;
}

long file_flags(pid_t pid, int fd)
{
  std::ifstream info("/proc/" + std::to_string(pid) + "/fdinfo/" + std::to_string(fd));
  for (std::string line; std::getline(info, line);)
    if (line.rfind("flags:", 0) == 0) return std::stol(line.substr(6), nullptr, 8);
  return -1;
}

std::string faults_library() { return build_dir() + "/tests/libpoetry_faults.so"; }

std::vector<std::string> with_faults(const std::vector<std::string>& variables)
{
  // A sanitizer runtime that is a shared library wants to be loaded first; the preloaded
  // library comes first here, and touches nothing the sanitizer watches.
  const char* asan = std::getenv("ASAN_OPTIONS");
  std::vector<std::string> argv{"/usr/bin/env", "LD_PRELOAD=" + faults_library(),
                                "ASAN_OPTIONS=verify_asan_link_order=0:" + std::string(asan ? asan : "")};
  argv.insert(argv.end(), variables.begin(), variables.end());
  return argv;
}

std::string loadgen() { return build_dir() + "/bench/loadgen"; }

std::map<std::string, double> load_fields(const std::string& out)
{
  std::map<std::string, double> fields;
  std::istringstream words(out);
  for (std::string word; words >> word;)
    if (auto eq = word.find('='); eq != std::string::npos) fields[word.substr(0, eq)] = std::stod(word.substr(eq + 1));
  return fields;
}

namespace {

// utime + stime from a /proc stat file (a process's, or one of its threads'), in seconds.
double stat_cpu_seconds(const std::string& path)
{
  std::ifstream in(path);
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stoll(field);
    if (i == 15) stime = std::stoll(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace

double cpu_seconds(pid_t pid) { return stat_cpu_seconds("/proc/" + std::to_string(pid) + "/stat"); }

std::vector<double> thread_cpu_seconds(pid_t pid)
{
  std::vector<double> seconds;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec))
    seconds.push_back(stat_cpu_seconds(task.path().string() + "/stat"));  // 0 for a thread that ended meanwhile
  std::sort(seconds.rbegin(), seconds.rend());
  return seconds;
}

}  // namespace poetry::test
