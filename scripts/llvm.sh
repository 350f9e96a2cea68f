# Source this file: installs LLVM 22 (Debian packages) when missing and exports the prefix that
# the `llvm22-1` feature (inkwell / llvm-sys) builds against. Used by `.ci/run` and `./opc`.
LLVM_PKGS="llvm-22-dev libpolly-22-dev libclang-22-dev zlib1g-dev libzstd-dev libxml2-dev libffi-dev"
if ! dpkg -s llvm-22-dev >/dev/null 2>&1; then
    echo "installing LLVM 22 ($LLVM_PKGS)" >&2
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $LLVM_PKGS >&2
fi
export LLVM_SYS_221_PREFIX=/usr/lib/llvm-22
