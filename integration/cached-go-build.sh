# Sourced by the build scripts that compile Go programs the tests and benchmarks run
# (integration/controlplane/build.sh, integration/certmanager/build.sh,
# hack/bench/adapter/build.sh): the parts they share.
#
#   find_go                      sets $go and $go_version (GO, else go on PATH, else /usr/local/go)
#   cache_begin NAME KEY         sets $dest=<cache>/NAME/KEY and $bin=$dest/bin; when the caller's
#                                `complete` function says $bin is whole, prints it and exits;
#                                else takes the per-key lock (a concurrent build of the same key
#                                is waited for) and makes $tmp, the directory to build into
#   cache_finish INFO            writes INFO to $tmp/BUILD-INFO, moves $tmp to $bin, prints $bin
#
# "Prints $bin" means the last stdout line is $bin, or $bin/$result when the caller sets
# `result` (a script whose product is one file).
# The cache root is ${KMB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge}. Old
# keys are never deleted here. Scripts define `log` before sourcing this.

find_go() {
    go=${GO:-}
    if [[ -z $go ]]; then
        if command -v go >/dev/null 2>&1; then
            go=go
        elif [[ -x /usr/local/go/bin/go ]]; then
            go=/usr/local/go/bin/go
        else
            log "no Go toolchain found (set GO=/path/to/go or put go on PATH)"
            exit 1
        fi
    fi
    go_version=$("$go" env GOVERSION)
}

cache_begin() {
    local name=$1 key=$2
    dest=${KMB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge}/$name/$key
    bin=$dest/bin
    if complete; then
        log "up to date: $bin"
        print_result
        exit 0
    fi
    mkdir -p "$dest"
    # Another build of the same key may be running (parallel test binaries).
    exec 9>"$dest/.lock"
    if ! flock -n 9; then
        log "waiting for another build of $key to finish"
        flock 9
    fi
    if complete; then
        log "built by a concurrent run: $bin"
        print_result
        exit 0
    fi
    tmp=$(mktemp -d "$dest/bin.tmp.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
}

cache_finish() {
    printf '%s\n' "$1" >"$tmp/BUILD-INFO"
    rm -rf "$bin"
    mv "$tmp" "$bin"
    trap - EXIT
    log "done: $bin"
    print_result
}

print_result() {
    printf '%s\n' "$bin${result:+/$result}"
}
