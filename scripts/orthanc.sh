#!/usr/bin/env bash
# A throw-away Orthanc (Debian's `orthanc` + `orthanc-dicomweb`) for tests and demos.
#   scripts/orthanc.sh start DIR [--user NAME --password-file FILE]   -> prints the DICOMweb root URL
#   scripts/orthanc.sh stop DIR
# start: writes DIR/orthanc.json (storage in DIR/storage, HTTP on a free port, DICOM server off,
# remote access refused, the DICOMweb plugin at /dicom-web/; with --user, HTTP basic authentication
# with that one registered user), starts /usr/sbin/Orthanc in the background (pid in DIR/orthanc.pid,
# log in DIR/orthanc.log), waits until its REST API answers (at most 30 s) and prints
# http://127.0.0.1:PORT/dicom-web; DIR/url holds the same, DIR/port the port.
# stop: ends that Orthanc (SIGTERM, then SIGKILL after 10 s) and leaves DIR as it is.
# Exit status 77 when Orthanc or its DICOMweb plugin is not installed (scripts/install-deps.sh).
# Orthanc 1.10 has no option to bind one address: it listens on every interface, and
# RemoteAccessAllowed=false makes it refuse every client that is not on the loopback.
set -euo pipefail

ORTHANC=${ORTHANC:-/usr/sbin/Orthanc}
PLUGIN=${ORTHANC_DICOMWEB_PLUGIN:-/usr/share/orthanc/plugins/libOrthancDicomWeb.so}
PY=/usr/bin/python3

usage() { echo "usage: $0 start DIR [--user NAME --password-file FILE] | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 dir=$2; shift 2

stop() {
  local pidfile="$dir/orthanc.pid"
  [ -f "$pidfile" ] || { echo "orthanc.sh: no $pidfile (not started here)" >&2; return 0; }
  local pid; pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case "$cmd" in
  stop) stop; exit 0 ;;
  start) ;;
  *) usage ;;
esac

user="" password_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --user) user=$2; shift 2 ;;
    --password-file) password_file=$2; shift 2 ;;
    *) usage ;;
  esac
done
if [ -n "$user" ] && [ -z "$password_file" ]; then echo "orthanc.sh: --user needs --password-file" >&2; exit 2; fi

[ -x "$ORTHANC" ] || { echo "orthanc.sh: SKIP: $ORTHANC not installed (apt-get install orthanc)" >&2; exit 77; }
[ -e "$PLUGIN" ] || { echo "orthanc.sh: SKIP: $PLUGIN not installed (apt-get install orthanc-dicomweb)" >&2; exit 77; }
[ -x "$PY" ] || { echo "orthanc.sh: SKIP: $PY not installed" >&2; exit 77; }

mkdir -p "$dir/storage"
dir=$(cd "$dir" && pwd)
if [ -f "$dir/orthanc.pid" ] && kill -0 "$(cat "$dir/orthanc.pid")" 2>/dev/null; then
  echo "orthanc.sh: an Orthanc started here is still running (pid $(cat "$dir/orthanc.pid")); stop it first" >&2; exit 1
fi

# The config is written by Python (JSON quoting of the password); it is readable by us only.
port=$("$PY" - "$dir" "$PLUGIN" "$user" "$password_file" <<'PYEOF'
import json, os, socket, sys
d, plugin, user, pwfile = sys.argv[1:5]
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
cfg = {
    "Name": "healthgpt-test-orthanc",
    "StorageDirectory": os.path.join(d, "storage"),
    "IndexDirectory": os.path.join(d, "storage"),
    "HttpPort": port,
    "RemoteAccessAllowed": False,
    "DicomServerEnabled": False,
    "HttpsCACertificates": "",
    "Plugins": [plugin],
    "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "StudiesMetadata": "Full",
                 "SeriesMetadata": "Full"},
    "AuthenticationEnabled": bool(user),
    "RegisteredUsers": {},
    "StableAge": 1,
    "SaveJobs": False,
}
if user:
    with open(pwfile) as f:
        cfg["RegisteredUsers"] = {user: f.readline().rstrip("\r\n")}
path = os.path.join(d, "orthanc.json")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump(cfg, f, indent=1)
print(port)
PYEOF
)

# setsid: its own process group, so a test runner's signals to ours do not reach it twice; the
# pid file is what `stop` uses.
setsid "$ORTHANC" "$dir/orthanc.json" >"$dir/orthanc.log" 2>&1 < /dev/null &
pid=$!
echo "$pid" > "$dir/orthanc.pid"
echo "$port" > "$dir/port"
url="http://127.0.0.1:$port/dicom-web"
echo "$url" > "$dir/url"

# Up means the REST API answers: 200, or 401 when authentication is on (no password on a command line).
for _ in $(seq 300); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "orthanc.sh: Orthanc exited during start-up; its log:" >&2; tail -n 20 "$dir/orthanc.log" >&2; rm -f "$dir/orthanc.pid"; exit 1
  fi
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/system" 2>/dev/null || true)
  if [ "$code" = 200 ] || [ "$code" = 401 ]; then
    echo "$url"; exit 0
  fi
  sleep 0.1
done
echo "orthanc.sh: Orthanc did not answer on port $port within 30 s; stopping it" >&2
stop
exit 1
