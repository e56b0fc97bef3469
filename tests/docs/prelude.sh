# Sourced before every bash and console block of the docs (tests/docs/test_docs.py).
# `bertserve serve ...` as the docs write it would hold the terminal until Ctrl-C: here it
# starts in the background on free ports (flags given after the docs' own win), waits until it
# answers SERVING, and points BERTSERVE_TARGET at itself for the rest of the block; when the
# block ends it gets SIGTERM and must exit 0. Every other command runs as written.
set -eo pipefail

_docs_servers=()

bertserve() {
  if [ "${1:-}" != serve ]; then
    command bertserve "$@"
    return
  fi
  shift
  local port_file log
  port_file=$(mktemp) log=$(mktemp)
  command bertserve serve "$@" --port 0 --metrics-port 0 --port-file "$port_file" >"$log" 2>&1 &
  local pid=$!
  _docs_servers+=("$pid:$log")
  for _ in $(seq 600); do
    if [ -s "$port_file" ] \
      && command bertserve health --target "127.0.0.1:$(cat "$port_file")" >/dev/null 2>&1; then
      export BERTSERVE_TARGET="127.0.0.1:$(cat "$port_file")"
      echo "docs: bertserve serve $* is SERVING on $BERTSERVE_TARGET" >&2
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$log" >&2
      echo "docs: bertserve serve $* exited before serving" >&2
      return 1
    fi
    sleep 0.5
  done
  cat "$log" >&2
  echo "docs: bertserve serve $* was not SERVING after 300 s" >&2
  return 1
}

_docs_stop_servers() {
  local status=$? entry pid log code
  for entry in "${_docs_servers[@]}"; do
    pid=${entry%%:*} log=${entry#*:}
    kill -TERM "$pid" 2>/dev/null || true
    code=0
    wait "$pid" || code=$?
    if [ "$code" != 0 ]; then
      cat "$log" >&2
      echo "docs: the server (pid $pid) exited $code after SIGTERM" >&2
      status=1
    fi
  done
  exit "$status"
}
trap _docs_stop_servers EXIT
