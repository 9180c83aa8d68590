#!/usr/bin/env bash
# Makes this machine able to run the real-engine tests: Podman with runc,
# default ulimits that fit this host's hard limits, and an offline busybox
# image.  Idempotent: checks each piece and does only what is missing, so a
# second run takes well under a second.  Prints one line per step to stderr.
#
#   scripts/setup-podman.sh [--service SOCKET]
#
# --service SOCKET also starts `podman system service` on unix://SOCKET (the
# Docker-compatible API a Docker CLI can drive) unless it already answers.
#
# Environment: VECTORLAY_TEST_IMAGE (default localhost/bb:1) names the image.
#
# Exit status: 0 ready; 2 bad arguments; 3 this machine cannot be set up
# (not root, no apt-get, no busybox) with a one-line reason on stderr;
# anything else is a failed step (its output precedes it).
set -euo pipefail

image="${VECTORLAY_TEST_IMAGE:-localhost/bb:1}"
service_socket=""
while [ $# -gt 0 ]; do
    case "$1" in
        --service) service_socket="${2:?--service needs a socket path}"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup-podman: unknown argument: $1" >&2; exit 2 ;;
    esac
done

say() { echo "setup-podman: $*" >&2; }
cannot() { echo "setup-podman: cannot set up Podman here: $*" >&2; exit 3; }

[ "$(id -u)" -eq 0 ] || cannot "not root (uid $(id -u)); rootful Podman with --device needs root"

# Packages.  busybox-static gives a statically linked /bin/busybox, so the
# image needs no libraries from the host.
packages=(podman runc busybox-static)
missing=()
for p in "${packages[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ]; then
        continue
    fi
    # Installed some other way (another distribution, a static build).
    case "$p" in podman|runc) command -v "$p" >/dev/null 2>&1 && continue ;; esac
    missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || cannot "no apt-get to install ${missing[*]}"
    say "installing ${missing[*]} (apt-get)"
    apt_log="$(mktemp)"
    # With Recommends: catatonit (for --init), slirp4netns, fuse-overlayfs.
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            "${missing[@]}"; } >"$apt_log" 2>&1; then
        cat "$apt_log" >&2
        say "apt-get failed installing ${missing[*]}"
        exit 1
    fi
    rm -f "$apt_log"
else
    say "packages present: ${packages[*]}"
fi
busybox=/bin/busybox
[ -x "$busybox" ] || cannot "$busybox missing after installing busybox-static"

# As root Podman gives containers more open files than many hosts' hard
# limit; a root without CAP_SYS_RESOURCE (a container, a CI sandbox) cannot
# raise a limit past it, and every run fails ("error setting rlimit type 7:
# operation not permitted" from runc, "setrlimit `RLIMIT_NOFILE`" from crun).
# runc: crun refuses hybrid (v1 + v2) cgroup hosts.
hard_nofile="$(ulimit -Hn)"
hard_nproc="$(ulimit -Hu)"
[ "$hard_nofile" = unlimited ] && hard_nofile=1048576
[ "$hard_nproc" = unlimited ] && hard_nproc=32768
[ "$hard_nproc" -gt 32768 ] && hard_nproc=32768
conf=/etc/containers/containers.conf
wanted="$(printf '%s\n' \
    '# Written by vectorlay scripts/setup-podman.sh: limits within the hard ones, runc.' \
    '[containers]' \
    "default_ulimits = [\"nofile=$hard_nofile:$hard_nofile\", \"nproc=$hard_nproc:$hard_nproc\"]" \
    '[engine]' \
    'runtime = "runc"')"
if [ -f "$conf" ] && [ "$(cat "$conf")" = "$wanted" ]; then
    say "$conf already set (nofile=$hard_nofile, nproc=$hard_nproc, runtime runc)"
else
    if [ -f "$conf" ] && ! head -n1 "$conf" | grep -q '^# Written by vectorlay'; then
        backup="$conf.before-vectorlay"
        cp -p "$conf" "$backup"
        say "kept the previous $conf as $backup"
    fi
    mkdir -p "$(dirname "$conf")"
    printf '%s\n' "$wanted" > "$conf"
    say "wrote $conf (nofile=$hard_nofile, nproc=$hard_nproc, runtime runc)"
fi

# The image: a busybox rootfs imported, so no registry is ever needed.  Its
# default command stands in for a replica: it runs until stopped and exits 0
# on SIGTERM (a shell as PID 1 ignores SIGTERM unless it traps it, and a stop
# would then always take the whole grace).
cmd='["sh","-c","trap \"exit 0\" TERM; sleep 2147483647 & wait"]'
if [ "$(podman image inspect --format '{{json .Config.Cmd}}' "$image" 2>/dev/null || true)" = "$cmd" ]; then
    say "image $image present"
else
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    mkdir -p "$rootfs/bin"
    cp "$busybox" "$rootfs/bin/busybox"
    for applet in sh sleep echo env cat; do
        ln -s busybox "$rootfs/bin/$applet"
    done
    tar -C "$rootfs" -c . | podman import -q --change "CMD $cmd" - "$image" >/dev/null
    say "imported $image"
fi

# A run proves the whole chain (runtime, ulimits, cgroups, network).
if ! out="$(podman run --rm --network none "$image" echo ok 2>&1)" || [ "$out" != ok ]; then
    echo "$out" >&2
    say "podman run of $image failed"
    exit 1
fi
say "podman run of $image works"

if [ -n "$service_socket" ]; then
    if podman --url "unix://$service_socket" version >/dev/null 2>&1; then
        say "API service already answers on unix://$service_socket"
    else
        mkdir -p "$(dirname "$service_socket")"
        rm -f "$service_socket"
        # setsid: the service outlives this script and its terminal.  From
        # /: conmon 2.1 writes its OOM marker file into its working
        # directory, which it inherits from the service.
        (cd / && exec setsid podman system service --time=0 "unix://$service_socket" \
            </dev/null >/dev/null 2>&1) &
        for _ in $(seq 1 50); do
            podman --url "unix://$service_socket" version >/dev/null 2>&1 && break
            sleep 0.1
        done
        podman --url "unix://$service_socket" version >/dev/null 2>&1 \
            || { say "API service did not come up on unix://$service_socket"; exit 1; }
        say "started API service on unix://$service_socket (pid $!)"
    fi
fi
say "ready: $(podman --version), image $image"
