# Sourced by hedwig's scripts: install what a script needs when it is missing,
# say what is being installed, and stop with one line naming the missing thing
# when it cannot be installed (not root and no sudo, no apt-get, no rustup).
#
# The caller sets NEED_WHO to its own name for those lines, then calls:
#   need_apt ITEM...          Debian packages; ITEM is PACKAGE or PACKAGE:PROBE
#   need_rust_toolchain NAME  a rustup toolchain (e.g. nightly)
#   need_cargo_install BIN CRATE [TOOLCHAIN]   a cargo subcommand or tool
#   need_venv DIR PYPI...     a Python venv under target/ holding PYPI packages
# Everything is idempotent and quiet when nothing is missing.

need_say() { echo "${NEED_WHO:-hedwig}: $*" >&2; }
need_fail() { need_say "$*"; exit 1; }

# Root through sudo when not root; fails (returns 1) when neither is possible.
_need_as_root() {
  if ((EUID == 0)); then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    return 127
  fi
}

# Whether ITEM's probe says it is present. PROBE is a command (looked for on
# PATH and in the sbin directories, where Postfix and dnsmasq put theirs), an
# absolute path that must exist, or `py:MODULE` (importable by python3);
# without a probe, dpkg must list the package as installed.
_need_present() { # PACKAGE PROBE
  local pkg=$1 probe=$2
  case "$probe" in
    "") dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' ;;
    /*) [[ -e $probe ]] ;;
    py:*) command -v python3 >/dev/null 2>&1 && python3 -c "import ${probe#py:}" 2>/dev/null ;;
    *) command -v "$probe" >/dev/null 2>&1 || [[ -x /usr/sbin/$probe || -x /sbin/$probe ]] ;;
  esac
}

_need_apt_updated=false

# Installs the Debian packages whose probe fails, in one apt-get call.
need_apt() { # ITEM...
  local item pkg probe missing=()
  for item in "$@"; do
    pkg=${item%%:*}
    probe=
    [[ $item == *:* ]] && probe=${item#*:}
    _need_present "$pkg" "$probe" || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  command -v apt-get >/dev/null 2>&1 ||
    need_fail "missing ${missing[*]} and no apt-get to install them (Debian or Ubuntu package names): install them by hand"
  if ((EUID != 0)) && ! command -v sudo >/dev/null 2>&1; then
    need_fail "missing ${missing[*]}: run as root or install sudo, or run: apt-get install ${missing[*]}"
  fi
  need_say "installing with apt-get: ${missing[*]}"
  if [[ " ${missing[*]} " == *" postfix "* ]]; then
    # Postfix's installer asks for a mail setup; we only use its tools.
    echo "postfix postfix/main_mailer_type select No configuration" |
      _need_as_root debconf-set-selections
  fi
  if ! $_need_apt_updated; then
    _need_as_root apt-get update -qq || need_fail "apt-get update failed (is a Debian mirror reachable?)"
    _need_apt_updated=true
  fi
  _need_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null || need_fail "apt-get install ${missing[*]} failed"
  for item in "$@"; do
    pkg=${item%%:*}
    probe=
    [[ $item == *:* ]] && probe=${item#*:}
    _need_present "$pkg" "$probe" || need_fail "installed $pkg, but ${probe:-the package} is still missing"
  done
}

need_rustup() {
  command -v rustup >/dev/null 2>&1 ||
    need_fail "rustup is missing: install Rust with rustup (https://rustup.rs), then run this again"
}

# A rustup toolchain, minimal profile (rustc, cargo, rust-std).
need_rust_toolchain() { # NAME
  need_rustup
  rustup toolchain list | grep -q "^$1" && return 0
  need_say "installing the Rust $1 toolchain (rustup toolchain install $1 --profile minimal)"
  rustup toolchain install "$1" --profile minimal >/dev/null || need_fail "rustup toolchain install $1 failed"
}

# A tool from crates.io, built with TOOLCHAIN (default: the default one).
need_cargo_install() { # BIN CRATE [TOOLCHAIN]
  command -v "$1" >/dev/null 2>&1 && return 0
  local tc=()
  [[ -n ${3:-} ]] && tc=("+$3")
  need_say "installing $2 from crates.io (cargo install --locked $2)"
  cargo "${tc[@]}" install --quiet --locked "$2" || need_fail "cargo install $2 failed"
}

# A venv at DIR (under target/) holding the PyPI packages PYPI...; a stamp
# file remembers what was installed, so a second call costs nothing.
need_venv() { # DIR PYPI...
  local dir=$1
  shift
  local want="$*"
  [[ -f $dir/.hedwig-stamp && $(<"$dir/.hedwig-stamp") == "$want" ]] && return 0
  need_apt python3:python3
  # Debian's python3 makes venvs only with python3-venv (ensurepip).
  _need_present python3-venv py:ensurepip || need_apt python3-venv
  need_say "installing from PyPI into $dir: $want"
  python3 -m venv "$dir" || need_fail "python3 -m venv $dir failed"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@" ||
    need_fail "pip install $want into $dir failed (is PyPI reachable?)"
  echo "$want" >"$dir/.hedwig-stamp"
}
