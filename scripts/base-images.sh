#!/usr/bin/env bash
# Build the local base images that Cantila's integration tests and generated
# Dockerfiles need, on a machine where no container registry is reachable.
#
#   cantila-test/debian:bookworm (+ debian:bookworm-slim)  debootstrap minbase
#   busybox:latest                                          FROM scratch + busybox-static
#   node:22-slim                                            Debian nodejs/npm (Node 18) stand-in
#   python:3.12-slim                                        Debian python3 (3.11) stand-in
#   redis:7                                                 Debian redis-server (7.0) stand-in
#   postgres:16                                             Debian postgresql-15 stand-in
#   mariadb:11                                              Debian mariadb-server (10.11) stand-in
#   memcached:1                                             Debian memcached (1.6) stand-in
#
# The add-on stand-ins take the environment, command, paths and entrypoint
# contract of the official images that Cantila's add-ons use (their
# entrypoints are in scripts/stand-ins/), so the same add-on definitions run
# on the real images.
#
# Every image is skipped when it already exists, unless --force is given.
# Needs root (debootstrap, apt-get) and a running Docker engine.
#
# Environment overrides:
#   CANTILA_APT_MIRROR  Debian mirror URL (default: read from the host's apt sources)
#   CANTILA_SUITE       Debian suite (default: bookworm)
set -euo pipefail

FORCE=0
SUITE="${CANTILA_SUITE:-bookworm}"
DEBIAN_IMAGE="cantila-test/debian:${SUITE}"
DEBIAN_ALIAS="debian:${SUITE}-slim"
BUSYBOX_IMAGE="busybox:latest"
NODE_IMAGE="node:22-slim"
PYTHON_IMAGE="python:3.12-slim"
REDIS_IMAGE="redis:7"
POSTGRES_IMAGE="postgres:16"
MARIADB_IMAGE="mariadb:11"
MEMCACHED_IMAGE="memcached:1"
STANDIN_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/stand-ins"
CA_BUNDLE="/etc/ssl/certs/ca-certificates.crt"
STANDIN_LABEL="io.cantila.stand-in"

usage() {
    sed -n '2,15s/^# \{0,1\}//p' "$0" >&2
    echo "usage: $0 [--force]" >&2
}

for arg in "$@"; do
    case "$arg" in
        --force|-f) FORCE=1 ;;
        --help|-h) usage; exit 0 ;;
        *) echo "base-images: unknown argument: $arg" >&2; usage; exit 2 ;;
    esac
done

log() { printf '[base-images] %s\n' "$*" >&2; }
die() { printf '[base-images] ERROR: %s\n' "$*" >&2; exit 1; }

TMPDIRS=()
cleanup() {
    local d
    for d in "${TMPDIRS[@]+"${TMPDIRS[@]}"}"; do
        [ -n "$d" ] && [ -d "$d" ] && rm -rf --one-file-system "$d"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# mktemp_dir NAME: create a temp dir, removed on exit; its path is put in $TMP_DIR
# (not printed: a $(...) subshell would lose the TMPDIRS registration).
TMP_DIR=""
mktemp_dir() {
    TMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/cantila-base-$1.XXXXXX")"
    TMPDIRS+=("$TMP_DIR")
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Returns 0 when the image must be (re)built.
want() {
    if [ "$FORCE" = 1 ]; then
        log "$1: --force given, rebuilding"
        return 0
    fi
    if image_exists "$1"; then
        log "$1: already present, skipping (use --force to rebuild)"
        return 1
    fi
    return 0
}

APT_UPDATED=0
# ensure_pkg PACKAGE: install a Debian package on the host if it is not installed.
ensure_pkg() {
    local pkg="$1"
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "package $pkg is missing and we are not root"
    if [ "$APT_UPDATED" = 0 ]; then
        log "host: apt-get update (needed to install $pkg)"
        apt-get update >&2
        APT_UPDATED=1
    fi
    log "host: installing $pkg"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$pkg" >&2
}

# Host apt source files that apt itself would read (it ignores other suffixes,
# e.g. *.disabled).
apt_source_files() {
    local f
    [ -s /etc/apt/sources.list ] && printf '%s\n' /etc/apt/sources.list
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && printf '%s\n' "$f"
    done
    return 0
}

# Print the first Debian (non-security) mirror URL used for $SUITE.
detect_mirror() {
    if [ -n "${CANTILA_APT_MIRROR:-}" ]; then
        printf '%s\n' "${CANTILA_APT_MIRROR%/}"
        return 0
    fi
    local f url=""
    while IFS= read -r f; do
        case "$f" in
            *.sources)
                # deb822: stanzas separated by blank lines; take URIs: of an
                # enabled "deb" stanza whose Suites: contains exactly $SUITE.
                url="$(awk -v suite="$SUITE" '
                    function flush() {
                        if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no" &&
                            (" " suites " ") ~ ("[ \t]" suite "[ \t]") && uris != "" && !found) {
                            split(uris, u, /[ \t]+/); print u[1]; found = 1
                        }
                        types = ""; suites = ""; uris = ""; enabled = ""
                    }
                    /^[ \t]*#/ { next }
                    /^[ \t]*$/ { flush(); next }
                    {
                        line = $0; key = tolower(line); sub(/:.*/, "", key)
                        val = line; sub(/^[^:]*:[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
                        if (key == "types") types = val
                        else if (key == "suites") suites = val
                        else if (key == "uris") uris = val
                        else if (key == "enabled") enabled = tolower(val)
                    }
                    END { flush() }' "$f")"
                ;;
            *)
                # one-line format: deb [options] URI suite components...
                url="$(awk -v suite="$SUITE" '
                    /^[ \t]*deb[ \t]/ {
                        line = $0; sub(/^[ \t]*deb[ \t]+/, "", line)
                        if (line ~ /^\[/) sub(/^\[[^]]*\][ \t]*/, "", line)
                        split(line, w, /[ \t]+/)
                        if (w[2] == suite) { print w[1]; exit }
                    }' "$f")"
                ;;
        esac
        if [ -n "$url" ]; then
            printf '%s\n' "${url%/}"
            return 0
        fi
    done < <(apt_source_files)
    return 1
}

# Copy the host's apt sources (and the Acquire settings that make the mirror
# usable: proxies, Valid-Until checks for snapshot mirrors) into a rootfs.
# Source files whose Signed-By keyring does not exist in the rootfs are skipped,
# since they would make every `apt-get update` inside a build fail.
install_apt_config() {
    local rootfs="$1" f k missing copied=0
    while IFS= read -r f; do
        missing=""
        while IFS= read -r k; do
            [ -n "$k" ] && [ ! -e "$rootfs$k" ] && missing="$k"
        done < <(grep -ioE 'signed-by(:|=)[[:space:]]*/[^][:space:],]+' "$f" | sed -E 's/^[^/]*//')
        if [ -n "$missing" ]; then
            log "debian: not copying $f into the image (keyring $missing is absent there)"
            continue
        fi
        if [ "$copied" = 0 ]; then
            # Replace debootstrap's own sources.list with the host's config.
            rm -f "$rootfs/etc/apt/sources.list"
            copied=1
        fi
        install -D -m 0644 "$f" "$rootfs$f"
        log "debian: copied apt source $f"
    done < <(apt_source_files)
    [ "$copied" = 1 ] || log "debian: no usable host apt sources; keeping debootstrap's sources.list"

    for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
        [ -f "$f" ] || continue
        if grep -qiE '^[[:space:]]*Acquire::(Check-Valid-Until|Check-Date|[a-z]+::Proxy|Proxy)' "$f"; then
            install -D -m 0644 "$f" "$rootfs$f"
            log "debian: copied apt setting $f"
        fi
    done
}

# ---------------------------------------------------------------------------
build_debian() {
    if ! want "$DEBIAN_IMAGE"; then
        if ! image_exists "$DEBIAN_ALIAS"; then
            docker tag "$DEBIAN_IMAGE" "$DEBIAN_ALIAS"
            log "debian: tagged $DEBIAN_ALIAS"
        fi
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "debootstrap needs root"
    [ -s "$CA_BUNDLE" ] || die "host CA bundle $CA_BUNDLE is missing"
    ensure_pkg debootstrap

    local mirror tmp rootfs
    mirror="$(detect_mirror)" || die "could not find a Debian mirror for '$SUITE' in the host apt sources (set CANTILA_APT_MIRROR)"
    log "debian: mirror $mirror"
    mktemp_dir debian; tmp="$TMP_DIR"
    rootfs="$tmp/rootfs"
    log "debian: debootstrap --variant=minbase $SUITE (this takes a few minutes)"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >&2 \
        || { [ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2; die "debootstrap failed"; }

    # Trust the same CAs as the host. Extra local CAs also go to
    # /usr/local/share/ca-certificates so that a later update-ca-certificates
    # (e.g. installing the ca-certificates package) keeps them.
    install -D -m 0644 "$CA_BUNDLE" "$rootfs$CA_BUNDLE"
    if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
        mkdir -p "$rootfs/usr/local/share/ca-certificates"
        cp -a /usr/local/share/ca-certificates/. "$rootfs/usr/local/share/ca-certificates/"
    fi
    install_apt_config "$rootfs"

    # Slim it down like the official image.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
           "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log \
           "$rootfs"/tmp/* "$rootfs"/root/.cache 2>/dev/null || true

    log "debian: importing into docker as $DEBIAN_IMAGE"
    tar --numeric-owner -C "$rootfs" -c . | docker import \
        --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --change "ENV LANG=C.UTF-8" \
        --change "ENV SSL_CERT_FILE=$CA_BUNDLE" \
        --change "ENV PIP_CERT=$CA_BUNDLE" \
        --change "ENV NODE_EXTRA_CA_CERTS=$CA_BUNDLE" \
        --change "ENV REQUESTS_CA_BUNDLE=$CA_BUNDLE" \
        --change "LABEL $STANDIN_LABEL=\"locally made debootstrap $SUITE minbase image (cantila scripts/base-images.sh)\"" \
        --change 'CMD ["bash"]' \
        - "$DEBIAN_IMAGE" >/dev/null
    docker tag "$DEBIAN_IMAGE" "$DEBIAN_ALIAS"
    log "debian: done ($DEBIAN_IMAGE, $DEBIAN_ALIAS)"
}

# ---------------------------------------------------------------------------
build_busybox() {
    want "$BUSYBOX_IMAGE" || return 0
    # The dynamic "busybox" package would not run in a scratch image.
    ensure_pkg busybox-static
    local bb=/bin/busybox tmp a
    [ -x "$bb" ] || bb=/usr/bin/busybox
    [ -x "$bb" ] || die "busybox-static is installed but no busybox binary found"

    mktemp_dir busybox; tmp="$TMP_DIR"
    mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/etc" "$tmp/rootfs/tmp" "$tmp/rootfs/root" "$tmp/rootfs/var/www"
    chmod 1777 "$tmp/rootfs/tmp"
    cp "$bb" "$tmp/rootfs/bin/busybox"
    # Same result as `busybox --install -s /bin`: every applet is a symlink
    # /bin/<applet> -> /bin/busybox.
    for a in $("$bb" --list); do
        [ "$a" = busybox ] && continue
        ln -sf /bin/busybox "$tmp/rootfs/bin/$a"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$tmp/rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/rootfs/etc/group"
    cat >"$tmp/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL $STANDIN_LABEL="locally made busybox image from Debian busybox-static (cantila scripts/base-images.sh)"
CMD ["sh"]
EOF
    log "busybox: docker build $BUSYBOX_IMAGE ($("$bb" --list | wc -l) applets)"
    docker build -q -t "$BUSYBOX_IMAGE" "$tmp" >/dev/null
    log "busybox: done"
}

# ---------------------------------------------------------------------------
build_node() {
    want "$NODE_IMAGE" || return 0
    image_exists "$DEBIAN_IMAGE" || die "$DEBIAN_IMAGE is missing"
    local tmp
    mktemp_dir node; tmp="$TMP_DIR"
    cat >"$tmp/Dockerfile" <<EOF
FROM $DEBIAN_IMAGE
LABEL $STANDIN_LABEL="locally made stand-in for $NODE_IMAGE: Debian $SUITE nodejs/npm, NOT the official image (cantila scripts/base-images.sh)"
RUN set -eux; \\
    apt-get update; \\
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm ca-certificates; \\
    apt-get clean; rm -rf /var/lib/apt/lists/* /root/.npm; \\
    groupadd --gid 1000 node; \\
    useradd --uid 1000 --gid node --shell /bin/bash --create-home node; \\
    node --version; npm --version
CMD ["node"]
EOF
    log "node: docker build $NODE_IMAGE (Debian nodejs + npm)"
    docker build -t "$NODE_IMAGE" "$tmp" >&2
    log "node: done"
}

# ---------------------------------------------------------------------------
build_python() {
    want "$PYTHON_IMAGE" || return 0
    image_exists "$DEBIAN_IMAGE" || die "$DEBIAN_IMAGE is missing"
    local tmp
    mktemp_dir python; tmp="$TMP_DIR"
    cat >"$tmp/Dockerfile" <<EOF
FROM $DEBIAN_IMAGE
LABEL $STANDIN_LABEL="locally made stand-in for $PYTHON_IMAGE: Debian $SUITE python3, NOT the official image (cantila scripts/base-images.sh)"
ENV PIP_BREAK_SYSTEM_PACKAGES=1
RUN set -eux; \\
    apt-get update; \\
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-pip python3-venv ca-certificates; \\
    apt-get clean; rm -rf /var/lib/apt/lists/*; \\
    [ -e /usr/local/bin/python ] || ln -s /usr/bin/python3 /usr/local/bin/python; \\
    [ -e /usr/local/bin/pip ] || ln -s /usr/bin/pip3 /usr/local/bin/pip; \\
    python --version; pip --version
CMD ["python3"]
EOF
    log "python: docker build $PYTHON_IMAGE (Debian python3 + pip + venv)"
    docker build -t "$PYTHON_IMAGE" "$tmp" >&2
    log "python: done"
}

# ---------------------------------------------------------------------------
# build_addon IMAGE NAME DOCKERFILE-BODY: build an add-on stand-in from the
# Debian image with its entrypoint (scripts/stand-ins/NAME-entrypoint.sh) as
# /usr/local/bin/docker-entrypoint.sh, where the official images have it.
# Services are kept from starting during the package install (policy-rc.d),
# as in Debian's own container images.
# The image is labelled with the hash of what it is built from, so a changed entrypoint or
# Dockerfile rebuilds it and an unchanged one is skipped.
build_addon() {
    local image="$1" name="$2" body="$3" tmp inputs
    [ -f "$STANDIN_DIR/$name-entrypoint.sh" ] || die "$STANDIN_DIR/$name-entrypoint.sh is missing"
    inputs="$( { printf '%s\n' "$body"; cat "$STANDIN_DIR/$name-entrypoint.sh"; } | sha256sum | cut -c1-16)"
    if [ "$FORCE" = 0 ] && image_exists "$image"; then
        if [ "$(docker image inspect -f '{{ index .Config.Labels "io.cantila.stand-in-inputs" }}' "$image" 2>/dev/null)" = "$inputs" ]; then
            log "$image: already present, skipping (use --force to rebuild)"
            return 0
        fi
        log "$image: built from other inputs, rebuilding"
    fi
    image_exists "$DEBIAN_IMAGE" || die "$DEBIAN_IMAGE is missing"
    mktemp_dir "$name"; tmp="$TMP_DIR"
    install -m 0755 "$STANDIN_DIR/$name-entrypoint.sh" "$tmp/docker-entrypoint.sh"
    cat >"$tmp/Dockerfile" <<EOF
FROM $DEBIAN_IMAGE
LABEL $STANDIN_LABEL="locally made stand-in for $image from Debian $SUITE packages, NOT the official image (cantila scripts/base-images.sh)"
LABEL io.cantila.stand-in-inputs="$inputs"
$body
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENTRYPOINT ["docker-entrypoint.sh"]
EOF
    local previous
    previous="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
    log "$name: docker build $image"
    docker build -t "$image" "$tmp" >&2
    # The image it replaced, unless a container still uses it.
    if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$image")" ]; then
        docker rmi "$previous" >/dev/null 2>&1 || true
    fi
    log "$name: done"
}

# apt_install PACKAGES...: the RUN line installing Debian packages in a stand-in.
apt_install() {
    printf '%s' "RUN set -eux; \\
    printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; \\
    mkdir -p /etc/postgresql-common; echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf; \\
    apt-get update; \\
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $* gosu; \\
    apt-get clean; rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d"
}

build_redis() {
    build_addon "$REDIS_IMAGE" redis "$(apt_install redis-server redis-tools)
RUN mkdir /data && chown redis:redis /data
VOLUME /data
WORKDIR /data
EXPOSE 6379
CMD [\"redis-server\"]"
}

build_postgres() {
    build_addon "$POSTGRES_IMAGE" postgres "$(apt_install postgresql-15 postgresql-client-15)
ENV PATH=/usr/lib/postgresql/15/bin:\$PATH PGDATA=/var/lib/postgresql/data
RUN mkdir -p /var/lib/postgresql/data /var/run/postgresql /docker-entrypoint-initdb.d \\
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql && chmod 03775 /var/run/postgresql
VOLUME /var/lib/postgresql/data
STOPSIGNAL SIGINT
EXPOSE 5432
CMD [\"postgres\"]"
}

build_mariadb() {
    build_addon "$MARIADB_IMAGE" mariadb "$(apt_install mariadb-server mariadb-client)
RUN set -eux; \\
    sed -ri 's/^(bind-address|skip-networking)/#&/' /etc/mysql/mariadb.conf.d/50-server.cnf; \\
    printf '[mariadbd]\\nskip-host-cache\\nskip-name-resolve\\n' >/etc/mysql/mariadb.conf.d/05-docker.cnf; \\
    rm -rf /var/lib/mysql; mkdir -p /var/lib/mysql /run/mysqld /docker-entrypoint-initdb.d; \\
    chown -R mysql:mysql /var/lib/mysql /run/mysqld
VOLUME /var/lib/mysql
EXPOSE 3306
CMD [\"mariadbd\"]"
}

build_memcached() {
    build_addon "$MEMCACHED_IMAGE" memcached "$(apt_install memcached)
USER memcache
EXPOSE 11211
CMD [\"memcached\"]"
}

command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine"

for step in debian busybox node python redis postgres mariadb memcached; do
    start=$SECONDS
    "build_$step"
    log "step $step finished in $((SECONDS - start))s"
done
log "all base images ready"
