# Shared by scripts/test, scripts/tour and scripts/bench: install what is missing, build.
# Source it; it defines functions only.

poetry_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Every error of a script is one line on stderr, "scripts/NAME: what went wrong".
poetry_script=scripts/$(basename "$0")

# poetry_fail STATUS MESSAGE...: prints the message as one line (newlines in it become spaces)
# and exits with STATUS (1: something failed; 2: a usage error).
poetry_fail() {
  local status=$1 message
  shift
  message=$*
  printf '%s: %s\n' "$poetry_script" "${message//$'\n'/ }" >&2
  exit "$status"
}

# need_value OPTION "$@" (the arguments from the option on): a usage error unless it has a value.
need_value() { (($# >= 2)) || poetry_fail 2 "option '$1' needs a value (try --help)"; }

# The Debian packages every script needs: compiler, CMake, Boost, and the tools the chapters
# use: netcat (a plain client), strace (what a model costs in system calls), pv (reading at a
# set rate), iproute2 (ss: a listening socket's queue). The race (scripts/bench) and the tests
# that run it add socat.
poetry_base_packages=(g++ cmake make ninja-build libboost-dev libboost-program-options-dev libboost-test-dev netcat-openbsd strace pv
  iproute2)

# ensure_packages PKG...: installs the missing ones with apt-get (as root), sudo apt-get
# (where sudo is available), or prints the exact command and exits non-zero.
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local install=(apt-get install -y --no-install-recommends "${missing[@]}") sudo=() log
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      poetry_fail 1 "missing packages; as root, run: apt-get update && ${install[*]}"
    fi
    sudo=(sudo)
  fi
  echo "Installing missing packages: ${missing[*]} ..." >&2
  log=$(mktemp)
  if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
         "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "${install[@]}"; } >"$log" 2>&1; then
    poetry_fail 1 "could not install ${missing[*]}: $(grep -m 1 '^E:' "$log" || tail -n 1 "$log") (apt-get's output: $log)"
  fi
  rm -f "$log"
}

# configure_project SOURCE DIR [CMAKE_ARGS...]: configures the project in SOURCE into DIR. A new
# folder is built with Ninja, whose build with nothing to do takes a tenth of a second, where
# make's takes five (scripts/check builds before every check); a folder made before keeps its
# generator, which CMake cannot change (make, for one that `cmake -S . -B build` made).
configure_project() {
  local source=$1 dir=$2 generator=()
  shift 2
  [ -e "$dir/CMakeCache.txt" ] || generator=(-G Ninja)
  cmake -S "$source" -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
}

# build_project DIR [CMAKE_ARGS...]: configures and builds the whole project into DIR, with a
# progress line on a terminal (the first build takes a few minutes: Asio is heavy to compile).
# With poetry_build_targets=(TARGET...) set, builds only those targets.
build_project() {
  local dir=$1
  shift
  echo "Building in $dir ..." >&2
  configure_project "$poetry_root" "$dir" "$@" || return 1
  local ok=1 line
  while IFS= read -r line; do
    case $line in
      "build status "*) ok=${line#build status } ;;
      \[*%\]* | \[*/*\]*) [ -t 2 ] && printf '\r  %s' "${line%%]*}]" >&2 ;;  # make's [ 45%], Ninja's [12/90]
    esac
  done < <({ cmake --build "$dir" -j "$(nproc)" ${poetry_build_targets[@]+--target "${poetry_build_targets[@]}"} 2>&1; echo "build status $?"; })
  [ -t 2 ] && printf '\r' >&2
  if [ "$ok" -ne 0 ]; then
    # Show the errors: build again, serially, with its output.
    cmake --build "$dir" -j 1 ${poetry_build_targets[@]+--target "${poetry_build_targets[@]}"}
    return 1
  fi
}
