#!/usr/bin/env bash
# End-to-end test of the menu-bar app on Linux, headless (DESIGN.md, "Testing the tray headless"):
# a private D-Bus session, Xvfb, openbox, a StatusNotifier watcher and panel, dunst, and
# `rmcp-mux --tray` (built with `--features tray`) running a real server (server-memory) and a
# fake one that crashes until told not to. Reads the menu back over D-Bus as the panel does
# (com.canonical.dbusmenu.GetLayout), clicks items as a user would (com.canonical.dbusmenu.Event),
# checks the daemon's status JSON, the notifications on the bus, launch at login, Quit and SIGTERM
# (no server, socket or PID file left), a first launch without a config and one with a broken
# config (the menu says "Config not applied: FILE:LINE: …", Open config opens it), a second app
# on a held lock (a notification says so), and saves a screenshot of the open menu (memory's
# submenu, two named clients) to target/tray-e2e/menu.png; docs/menu.png is a copy of it.
#
# Needs: tools/install-tray-deps.sh, tools/install-test-peers.sh, and
#   cargo build --features tray --bins
# Every wait is bounded; everything started is killed on exit. Exits non-zero on the first
# failed check, printing what it saw. Logs are left in target/tray-e2e/.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/target/tray-e2e"
bin="${RMCP_MUX_BIN:-$root/target/debug/rmcp-mux}"
fake="$root/target/debug/mcp-fake-server"
memory_js="$root/tests/peers/node_modules/@modelcontextprotocol/server-memory/dist/index.js"

say() { echo "tray-e2e: $*"; }
die() {
  echo "tray-e2e: FAILED: $*" >&2
  if [ -f "$out/menu.txt" ]; then echo "--- last menu read:" >&2; cat "$out/menu.txt" "$out/dbusmenu.err" >&2; fi
  if [ -f "$out/tray.log" ]; then echo "--- tray.log (tail):" >&2; tail -n 30 "$out/tray.log" >&2; fi
  for f in "$HOME"/.local/state/rmcp-mux/logs/*.log; do
    [ -f "$f" ] && { echo "--- $f (tail):" >&2; tail -n 30 "$f" >&2; }
  done
  exit 1
}

# Re-run inside a private session bus so nothing reaches the user's desktop.
if [ "${TRAY_E2E_INNER:-}" != 1 ]; then
  for f in "$bin" "$fake"; do
    [ -x "$f" ] || die "$f not built; run: cargo build --features tray --bins"
  done
  [ -f "$memory_js" ] || die "server-memory not installed; run tools/install-test-peers.sh"
  for t in dbus-run-session Xvfb openbox dbus-monitor dunst status-notifier-watcher \
    gtk-sni-tray-standalone gdbus xdotool xclip import xwininfo python3; do
    command -v "$t" >/dev/null 2>&1 || die "'$t' not found; run tools/install-tray-deps.sh"
  done
  rm -rf "$out"
  mkdir -p "$out"
  export TRAY_E2E_INNER=1
  exec timeout -k 10 300 dbus-run-session -- "$0" "$@"
fi

work="$(mktemp -d /tmp/tray-e2e.XXXXXX)"
pids=()
cleanup() {
  local rc=$?
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 0.2 s until it succeeds.
wait_for() {
  local secs="$1" what="$2"
  shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || die "timed out after ${secs}s waiting for: $what"
    sleep 0.2
  done
}
has_owner() {
  gdbus call --session --dest org.freedesktop.DBus --object-path /org/freedesktop/DBus \
    --method org.freedesktop.DBus.NameHasOwner "$1" | grep -q true
}

# A temp HOME and XDG dirs: the autostart entry and every socket stay in here.
export HOME="$work/home" XDG_CONFIG_HOME="$work/home/.config" XDG_DATA_HOME="$work/home/.local/share"
export XDG_CACHE_HOME="$work/home/.cache" XDG_RUNTIME_DIR="$work/xdg-run"
mkdir -p "$HOME" "$XDG_CONFIG_HOME" "$XDG_RUNTIME_DIR"
chmod 700 "$XDG_RUNTIME_DIR"
unset WAYLAND_DISPLAY

display=""
for n in $(seq 99 140); do
  if [ ! -e "/tmp/.X$n-lock" ] && [ ! -e "/tmp/.X11-unix/X$n" ]; then display=":$n"; break; fi
done
[ -n "$display" ] || die "no free X display between :99 and :140"
export DISPLAY="$display"

say "Xvfb on $DISPLAY, openbox, notifications, StatusNotifier watcher and panel"
Xvfb "$DISPLAY" -screen 0 1024x768x24 -nolisten tcp >"$out/xvfb.log" 2>&1 &
pids+=($!)
wait_for 20 "Xvfb" xwininfo -root
openbox >"$out/openbox.log" 2>&1 &
pids+=($!)
dbus-monitor --session "interface='org.freedesktop.Notifications'" >"$out/notifications.log" 2>&1 &
pids+=($!)
dunst >"$out/dunst.log" 2>&1 &
pids+=($!)
wait_for 20 "dunst on the bus" has_owner org.freedesktop.Notifications
status-notifier-watcher >"$out/watcher.log" 2>&1 &
pids+=($!)
wait_for 20 "status-notifier-watcher on the bus" has_owner org.kde.StatusNotifierWatcher
gtk-sni-tray-standalone --top >"$out/panel.log" 2>&1 &
pids+=($!)
watcher_prop() {
  gdbus call --session --dest org.kde.StatusNotifierWatcher --object-path /StatusNotifierWatcher \
    --method org.freedesktop.DBus.Properties.Get org.kde.StatusNotifierWatcher "$1"
}
wait_for 20 "the panel registered as a host" sh -c \
  "gdbus call --session --dest org.kde.StatusNotifierWatcher --object-path /StatusNotifierWatcher \
   --method org.freedesktop.DBus.Properties.Get org.kde.StatusNotifierWatcher \
   IsStatusNotifierHostRegistered | grep -q true"

config="$work/mux.toml"
cat >"$config" <<EOF
[daemon]
control_socket = "$work/run/control.sock"
socket_dir = "$work/run/sockets"

[servers.memory]
cmd = "node"
args = ["$memory_js"]
env = { MEMORY_FILE_PATH = "$work/memory.jsonl" }

[servers.crasher]
cmd = "$fake"
args = ["--crash-while-exists", "$work/crash-marker", "--counter-file", "$work/crasher-starts"]
max_restarts = 2
restart_backoff_ms = 300
EOF
touch "$work/crash-marker"

say "check 0: without a display --tray fails cleanly"
rc=0
env -u DISPLAY -u WAYLAND_DISPLAY "$bin" --tray --config "$config" >"$out/nodisplay.log" 2>&1 || rc=$?
[ "$rc" = 1 ] || die "without a display: exit $rc, expected 1: $(cat "$out/nodisplay.log")"
grep -qx "rmcp-mux: --tray needs a graphical session (neither DISPLAY nor WAYLAND_DISPLAY is set); run \`rmcp-mux\` without --tray for the daemon alone" \
  "$out/nodisplay.log" || die "without a display: $(cat "$out/nodisplay.log")"
[ ! -e "$work/run/control.sock" ] || die "without a display: a control socket was left behind"

say "starting $bin --tray"
RMCP_MUX_LOG=info,rmcp_mux::tray=debug "$bin" --tray --config "$config" >"$out/tray.log" 2>&1 &
tray_pid=$!
pids+=("$tray_pid")

# The item of the app with PID $1: libayatana registers its unique bus name (or name/path) with
# the watcher; the object lives under /org/ayatana/NotificationItem/. An earlier app's entry
# may still be listed, so the entry whose bus name the PID owns is taken. Sets bus, item_path
# and menu_path.
bus_pid() {
  gdbus call --session --dest org.freedesktop.DBus --object-path /org/freedesktop/DBus \
    --method org.freedesktop.DBus.GetConnectionUnixProcessID "$1" 2>/dev/null | grep -o '[0-9]\+' | tail -n1
}
item_of() {
  local e
  for e in $(watcher_prop RegisteredStatusNotifierItems | grep -o "'[^']*'" | tr -d "'"); do
    [ "$(bus_pid "${e%%/*}")" = "$1" ] && { echo "$e"; return 0; }
  done
  return 1
}
find_item() {
  wait_for 30 "the tray item of PID $1 registered with the watcher" item_of "$1"
  entry="$(item_of "$1")"
  bus="${entry%%/*}"
  if [[ "$entry" == */* ]]; then
    item_path="/${entry#*/}"
  else
    node="$(gdbus introspect --session --dest "$bus" --object-path /org/ayatana/NotificationItem |
      sed -n 's/^ \{2,\}node \([^ /]*\) {.*/\1/p' | head -n1)" || true
    [ -n "$node" ] || die "no item under /org/ayatana/NotificationItem on $bus"
    item_path="/org/ayatana/NotificationItem/$node"
  fi
  menu_path="$(gdbus call --session --dest "$bus" --object-path "$item_path" \
    --method org.freedesktop.DBus.Properties.Get org.kde.StatusNotifierItem Menu |
    grep -o "'/[^']*'" | tr -d "'")"
  [ -n "$menu_path" ] || die "the item at $bus $item_path has no Menu property"
  say "item $bus $item_path, menu $menu_path"
}
find_item "$tray_pid"

read_menu() {
  DBUSMENU_RAW="$out/layout.raw" python3 "$root/tools/dbusmenu.py" "$bus" "$menu_path" >"$out/menu.txt" 2>"$out/dbusmenu.err"
}
# menu_has LINE-REGEX: the menu (read now) has a line matching it (label, flags; no id).
menu_has() { read_menu && cut -f2- "$out/menu.txt" | grep -qx -- "$1"; }
menu_id() { read_menu && awk -F'\t' -v l="$1" '$2 == l { print $1; exit }' "$out/menu.txt"; }
click() {
  gdbus call --session --dest "$bus" --object-path "$menu_path" \
    --method com.canonical.dbusmenu.Event "$1" clicked "<int32 0>" 0 >/dev/null
}
status_json() { "$bin" status --json --config "$config"; }
# field SERVER KEY: one field of one server from the status JSON.
field() {
  status_json | python3 -c "import json,sys; s=[x for x in json.load(sys.stdin)['servers'] if x['name']=='$1'][0]; print(s['$2'])"
}
T=$'\t'
# The memory the summary adds once measured: " · 410 MB", then " · ≈ 1.6 GB saved" when sharing saves.
M=' · [0-9.]* [KMGT]B\( · ≈ [0-9.]* [KMGT]B saved\)\{0,1\}'

say "check 1: both servers' states, labels and enabled flags"
wait_for 60 "memory running in the menu" menu_has \
  "memory > running · pid [0-9]* · 0 clients${T}disabled${T}-${T}item"
wait_for 30 "crasher failed in the menu" menu_has "crasher — failed${T}enabled${T}-${T}submenu"
for line in \
  "2 servers running|1 of 2 servers running, 1 failed${M}${T}disabled${T}-${T}item" \
  "memory > Memory: [0-9.]* [KMGT]B${T}disabled${T}-${T}item" \
  "memory > Shared: one process for all clients${T}disabled${T}-${T}item" \
  "memory > Clients: none${T}disabled${T}-${T}item" \
  "memory${T}enabled${T}-${T}submenu" \
  "memory > Restart${T}enabled${T}-${T}item" \
  "memory > Stop${T}enabled${T}-${T}item" \
  "memory > Start${T}disabled${T}-${T}item" \
  "crasher — failed > failed · gave up restarting; Restart to try again · last exit: exited with status 1${T}disabled${T}-${T}item" \
  "crasher — failed > Restart${T}enabled${T}-${T}item" \
  "crasher — failed > Stop${T}disabled${T}-${T}item" \
  "crasher — failed > Start${T}enabled${T}-${T}item" \
  "Restart all${T}enabled${T}-${T}item" \
  "Open config${T}enabled${T}-${T}item" \
  "Open logs${T}enabled${T}-${T}item" \
  "Launch at login${T}enabled${T}unchecked${T}item" \
  "Quit rmcp-mux${T}enabled${T}-${T}item"; do
  if [[ "$line" == *"|"* ]]; then line="${line#*|}"; fi
  menu_has "$line" || die "menu line missing: $line"
done
memory_pid="$(field memory pid)"
menu_has "memory > running · pid $memory_pid · 0 clients${T}disabled${T}-${T}item" ||
  die "memory's menu line does not show its pid $memory_pid"
[ "$(field crasher state)" = failed ] || die "status JSON: crasher is not failed"
[ "$(field crasher restarts)" = 2 ] || die "status JSON: crasher restarts != 2"

say "check 2: crash and restart-limit notifications (one crash notice: rate-limited)"
wait_for 20 "the restart-limit notification" grep -q \
  'string "crasher stopped after 2 failed restarts — click its menu item to restart"' \
  "$out/notifications.log"
grep -q 'string "crasher crashed"' "$out/notifications.log" || die "no crash notification"
grep -Eq 'string "crasher exited with status 1; restarting in [0-9]+ s"' "$out/notifications.log" ||
  die "the crash notification does not say why and when"
crashes="$(grep -c 'string "crasher crashed"' "$out/notifications.log")"
[ "$crashes" = 1 ] || die "expected 1 crash notification (rate limit), saw $crashes"

say "check 3: a label inside a submenu updates in place (a client connects to memory)"
# client NAME: a client of memory that initializes as NAME (clientInfo) and stays connected.
# exec: the background job's pid is python's, so kill ends the client.
client() {
  exec python3 - "$work/run/sockets/memory.sock" "$1" <<'PY'
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": sys.argv[2], "version": "1"}}}
s.sendall((json.dumps(init) + "\n").encode())
time.sleep(120)
PY
}
client Cursor >"$work/client.log" 2>&1 &
client_pid=$!
pids+=("$client_pid")
t0="$(date +%s%N)"
wait_for 10 "memory's status line to show 1 client" menu_has \
  "memory > running · pid $memory_pid · 1 client${T}disabled${T}-${T}item"
ms=$((($(date +%s%N) - t0) / 1000000))
# The app polls every 100 ms; each read here costs a gdbus call. A loose bound for loaded CI.
say "  seen over D-Bus ${ms} ms after the client started (python start and reads included)"
[ "$ms" -lt 3000 ] || die "the in-place update took ${ms} ms"
client "Claude Code" >"$work/client2.log" 2>&1 &
client2_pid=$!
pids+=("$client2_pid")
wait_for 10 "memory's clients named by their clientInfo" menu_has \
  "memory > Clients: Cursor, Claude Code${T}disabled${T}-${T}item"
[ "$(field memory client_names)" = "['Cursor', 'Claude Code']" ] ||
  die "status JSON: memory's client_names"
# Two clients of one process: the summary says what the second one's copy would have taken.
wait_for 10 "the summary with what sharing saves" menu_has \
  "1 of 2 servers running, 1 failed · [0-9.]* [KMGT]B · ≈ [0-9.]* [KMGT]B saved${T}disabled${T}-${T}item"

say "check 4: screenshot of the open menu"
panel="$(xdotool search --onlyvisible --class gtk-sni-tray-standalone 2>/dev/null | head -n1 || true)"
if [ -z "$panel" ]; then panel="$(xdotool search --onlyvisible --name gtk-sni-tray 2>/dev/null | head -n1 || true)"; fi
[ -n "$panel" ] || die "cannot find the panel window"
eval "$(xdotool getwindowgeometry --shell "$panel")"
# A notification still on screen (crasher's) would be in the shot: close it first.
dunstctl close-all 2>/dev/null || true
# The panel packs its icons from the left; ours is the only one.
xdotool mousemove $((X + HEIGHT / 2)) $((Y + HEIGHT / 2)) click 3
# Open memory's submenu from the keyboard: first item, right.
# The menu has no event to wait for; half a second per step is plenty for GTK to draw it.
sleep 1
for k in Down Right; do xdotool key "$k"; sleep 0.5; done
# Just the menu (the rest of the screen is black), in 64 colours: small enough for the README.
import -window root -trim +repage -colors 64 "$out/menu.png"
xdotool key Escape Escape
[ -s "$out/menu.png" ] || die "no screenshot"
kill "$client_pid" "$client2_pid"
wait_for 10 "memory's status line back to 0 clients" menu_has \
  "memory > running · pid $memory_pid · 0 clients${T}disabled${T}-${T}item"

say "check 4b: Copy host entry puts the proxy command for memory on the clipboard"
click "$(menu_id "memory > Copy host entry")"
# entry_copied: the clipboard holds memory's entry (xclip asks the app, which owns it).
entry_copied() {
  timeout 5 xclip -o -selection clipboard >"$out/clipboard.json" 2>/dev/null &&
    python3 - "$out/clipboard.json" "$root/target/debug/rmcp-mux-proxy" "$work/run/sockets/memory.sock" "$config" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
assert e == {"command": sys.argv[2], "args": ["--socket", sys.argv[3], "--autostart", "--config", sys.argv[4]]}, e
PY
}
wait_for 10 "memory's host entry on the clipboard" entry_copied
wait_for 10 "the copy notification" grep -q "string \"Copied memory's host entry\"" "$out/notifications.log"

say "check 5: clicking crasher's Restart restarts it"
rm -f "$work/crash-marker"
starts_before="$(wc -l <"$work/crasher-starts")"
restart_id="$(menu_id "crasher — failed > Restart")"
[ -n "$restart_id" ] || die "no Restart item under crasher"
click "$restart_id"
wait_for 20 "crasher running in the status JSON" sh -c "[ \"\$('$bin' status --json --config '$config' | python3 -c \"import json,sys; print([x for x in json.load(sys.stdin)['servers'] if x['name']=='crasher'][0]['state'])\")\" = running ]"
crasher_pid="$(field crasher pid)"
[ -n "$crasher_pid" ] && [ "$crasher_pid" != None ] || die "crasher runs without a pid"
starts_after="$(wc -l <"$work/crasher-starts")"
[ "$starts_after" -eq $((starts_before + 1)) ] || die "crasher started $starts_before then $starts_after times"
wait_for 10 "crasher running in the menu (rebuilt: steady label)" menu_has \
  "crasher > running · pid $crasher_pid · 0 clients${T}disabled${T}-${T}item"
menu_has "crasher${T}enabled${T}-${T}submenu" || die "crasher's submenu still says failed"
menu_has "crasher > Start${T}disabled${T}-${T}item" || die "crasher's Start still enabled"
menu_has "1 of 2 servers running, 1 failed${M}${T}disabled${T}-${T}item" &&
  die "the summary did not update"
menu_has "2 servers${M}${T}disabled${T}-${T}item" || die "summary is not 2 servers with their memory"

say "check 5b: Stop and Start from the menu, then Restart all"
state_is() { [ "$(field "$1" state)" = "$2" ]; }
click "$(menu_id "crasher > Stop")"
wait_for 20 "crasher stopped in the status JSON" state_is crasher stopped
wait_for 10 "crasher stopped in the menu" menu_has "crasher > stopped${T}disabled${T}-${T}item"
menu_has "crasher > Stop${T}disabled${T}-${T}item" || die "crasher's Stop enabled while stopped"
menu_has "crasher > Restart${T}disabled${T}-${T}item" || die "crasher's Restart enabled while stopped"
menu_has "1 of 2 servers running${M}${T}disabled${T}-${T}item" || die "summary is not 1 of 2"
click "$(menu_id "crasher > Start")"
wait_for 20 "crasher running again" state_is crasher running
crasher_pid="$(field crasher pid)"
wait_for 10 "crasher running in the menu" menu_has \
  "crasher > running · pid $crasher_pid · 0 clients${T}disabled${T}-${T}item"
old_memory_pid="$memory_pid"
click "$(menu_id "Restart all")"
pid_changed() { p="$(field "$1" pid)"; [ "$p" != None ] && [ "$p" != "$2" ] && state_is "$1" running; }
wait_for 60 "memory restarted by Restart all" pid_changed memory "$old_memory_pid"
wait_for 20 "crasher restarted by Restart all" pid_changed crasher "$crasher_pid"
memory_pid="$(field memory pid)"
crasher_pid="$(field crasher pid)"
wait_for 10 "the menu shows the new pids" menu_has \
  "memory > running · pid $memory_pid · 0 clients${T}disabled${T}-${T}item"

say "check 6: launch at login writes and removes the autostart entry"
desktop="$XDG_CONFIG_HOME/autostart/rmcp-mux.desktop"
click "$(menu_id "Launch at login")"
wait_for 10 "the autostart entry" test -f "$desktop"
grep -q -- "--tray --config $config" "$desktop" || die "autostart entry: $(cat "$desktop")"
wait_for 10 "the check item checked" menu_has "Launch at login${T}enabled${T}checked${T}item"
click "$(menu_id "Launch at login")"
wait_for 10 "the autostart entry gone" sh -c "[ ! -e '$desktop' ]"
wait_for 10 "the check item unchecked" menu_has "Launch at login${T}enabled${T}unchecked${T}item"

say "check 6b: SIGHUP reloads instead of ending the app; an edit of the config shows up in the menu"
memory_before="$(field memory pid)"
kill -HUP "$tray_pid"
wait_for 15 "the SIGHUP reload in the log" sh -c \
  "'$bin' logs --config '$config' -n 1000 | grep -q 'SIGHUP received; reloading the config'"
kill -0 "$tray_pid" 2>/dev/null || die "SIGHUP ended the app"
printf '\n[servers.extra]\ncmd = "%s"\n' "$fake" >>"$config"
wait_for 20 "the added server in the menu" menu_has "extra${T}enabled${T}-${T}submenu"
wait_for 20 "the added server running" sh -c "[ \"\$('$bin' status --json --config '$config' | python3 -c \"import json,sys; print([s['state'] for s in json.load(sys.stdin)['servers'] if s['name']=='extra'])\")\" = \"['running']\" ]"
[ "$(field memory pid)" = "$memory_before" ] || die "the reload restarted memory, which did not change"
extra_pid="$(field extra pid)"

say "check 6c: a server shared per client shows its instance, whose Restart restarts it alone"
printf '\n[servers.browser]\ncmd = "%s"\nshare = "client"\n' "$fake" >>"$config"
wait_for 20 "the per-client server in the menu" menu_has "browser${T}enabled${T}-${T}submenu"
menu_has "browser > per client · none running · 0 clients${T}disabled${T}-${T}item" ||
  die "the per-client server's status line"
python3 - "$work/run/sockets/browser.sock" >"$work/browser-client.log" 2>&1 <<'PY' &
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}}
s.sendall((json.dumps(init) + "\n").encode())
s.recv(65536)
time.sleep(120)
PY
browser_client=$!
pids+=("$browser_client")
# instance_pid: the pid of the server's one instance in the status JSON.
instance_pid() {
  status_json | python3 -c "import json,sys; s=[x for x in json.load(sys.stdin)['servers'] if x['name']=='browser'][0]; print(s['instances'][0]['pid'] if s.get('instances') else None)"
}
instance_running() {
  [ "$(status_json | python3 -c "import json,sys; s=[x for x in json.load(sys.stdin)['servers'] if x['name']=='browser'][0]; print([i['state'] for i in s.get('instances', [])])")" = "['running']" ]
}
wait_for 20 "the browser instance running" instance_running
browser_pid="$(instance_pid)"
wait_for 10 "the instance in the menu" menu_has \
  "browser > client 1 > running · pid $browser_pid · 1 client\( · [0-9.]* [KMGT]B\)\{0,1\}${T}disabled${T}-${T}item"
menu_has "browser > Clients: e2e${T}disabled${T}-${T}item" || die "the instance's client name"
menu_has "browser > Shared: not shared, one process per client${T}disabled${T}-${T}item" ||
  die "the per-client server's sharing line"
menu_has "browser > client 1${T}enabled${T}-${T}submenu" || die "the instance's submenu"
menu_has "browser > per client · 1 running · 1 client${T}disabled${T}-${T}item" ||
  die "the per-client server's status line with one instance"
click "$(menu_id "browser > client 1 > Restart")"
new_instance() { p="$(instance_pid)"; [ "$p" != None ] && [ "$p" != "$browser_pid" ]; }
wait_for 20 "the instance restarted by its menu item" new_instance
kill -0 "$browser_pid" 2>/dev/null && die "the restarted instance's old child $browser_pid lives on"
[ "$(field memory pid)" = "$memory_before" ] || die "restarting an instance restarted memory"
browser_pid="$(instance_pid)"
wait_for 10 "the menu shows the instance's new pid" menu_has \
  "browser > client 1 > running · pid $browser_pid · 1 client\( · [0-9.]* [KMGT]B\)\{0,1\}${T}disabled${T}-${T}item"

say "check 7: Quit stops every server and exits 0"
click "$(menu_id "Quit rmcp-mux")"
end=$((SECONDS + 20))
while kill -0 "$tray_pid" 2>/dev/null; do
  [ "$SECONDS" -lt "$end" ] || die "the app did not exit within 20 s of Quit"
  sleep 0.2
done
rc=0
wait "$tray_pid" || rc=$?
[ "$rc" = 0 ] || die "the app exited with $rc after Quit"
for p in "$memory_pid" "$crasher_pid" "$extra_pid" "$browser_pid"; do
  kill -0 "$p" 2>/dev/null && die "server process $p outlived Quit"
done
[ ! -e "$work/run/sockets/memory.sock" ] || die "memory's socket left behind"
! ls "$HOME"/.local/state/rmcp-mux/*.pid >/dev/null 2>&1 || die "the PID file was left behind"

# No server process, socket or PID file is left: ARGS are the server PIDs and sockets.
nothing_left() {
  local what="$1"
  shift
  for x in "$@"; do
    case "$x" in
      /*) [ ! -e "$x" ] || die "$what: $x left behind" ;;
      *) kill -0 "$x" 2>/dev/null && die "$what: server process $x outlived the app" ;;
    esac
  done
  ! ls "$HOME"/.local/state/rmcp-mux/*.pid >/dev/null 2>&1 || die "$what: the PID file was left behind"
}
# wait_exit PID WHAT: waits (bounded) for the app to exit and checks it exited 0.
wait_exit() {
  local end=$((SECONDS + 20))
  while kill -0 "$1" 2>/dev/null; do
    [ "$SECONDS" -lt "$end" ] || die "the app did not exit within 20 s of $2"
    sleep 0.2
  done
  local rc=0
  wait "$1" || rc=$?
  [ "$rc" = 0 ] || die "the app exited with $rc after $2"
}

# An opener that records what the app asks it to open (the app runs xdg-open from its PATH).
mkdir -p "$work/bin"
cat >"$work/bin/xdg-open" <<SH
#!/bin/sh
echo "\$*" >>"$work/opened"
SH
chmod +x "$work/bin/xdg-open"

say "check 8: a first launch without a config creates it from the template and shows the app"
fresh="$work/fresh/mux.toml"
PATH="$work/bin:$PATH" RMCP_MUX_LOG=info,rmcp_mux::tray=debug "$bin" --tray --config "$fresh" >"$out/tray-fresh.log" 2>&1 &
tray_pid=$!
pids+=("$tray_pid")
find_item "$tray_pid"
[ -f "$fresh" ] || die "no config created at $fresh"
[ "$(stat -c %a "$fresh")" = 600 ] || die "the created config is not 0600"
grep -q '^# \[servers.memory\]' "$fresh" || die "the created config is not the template: $(cat "$fresh")"
fresh_real="$(realpath "$fresh")"
wait_for 20 "'Config not applied' with the file and line in the menu" menu_has \
  "Config not applied: $fresh_real:1: servers: no servers defined; add a \[servers.NAME\] table with a \`cmd\`${T}disabled${T}-${T}item"
menu_has "Open config${T}enabled${T}-${T}item" || die "Open config is not enabled"
click "$(menu_id "Open config")"
wait_for 10 "Open config to run the opener on the config" grep -qx -- "$fresh_real" "$work/opened"
# Fixing the file applies it: the server starts, the error goes.
# (The template's control socket and socket folder: the defaults under this test's $HOME.)
printf '[servers.fixed]\ncmd = "%s"\n' "$fake" >"$fresh"
wait_for 30 "the fixed config's server in the menu" menu_has "fixed${T}enabled${T}-${T}submenu"
wait_for 20 "the fixed server running" sh -c \
  "'$bin' status --json --config '$fresh' | python3 -c \"import json,sys; s=json.load(sys.stdin); assert [x['state'] for x in s['servers']] == ['running']\""
read_menu
grep -q "Config not applied" "$out/menu.txt" && die "the error is still shown after the fix"
status_json_fresh="$("$bin" status --json --config "$fresh")"
fixed_pid="$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['servers'][0]['pid'])" "$status_json_fresh")"
child_path="$(python3 -c "import json,sys; print(json.loads(sys.argv[1]).get('child_path',''))" "$status_json_fresh")"
[ -n "$child_path" ] || die "status --json does not say which PATH servers get"
"$bin" status --config "$fresh" | grep -qx "servers' PATH: $child_path" || die "the status table does not show the servers' PATH"
# The app changed to the home folder, and so did its servers.
[ "$(readlink "/proc/$fixed_pid/cwd")" = "$HOME" ] || die "the server runs in $(readlink "/proc/$fixed_pid/cwd"), not \$HOME"
[ "$(tr '\0' '\n' <"/proc/$fixed_pid/environ" | sed -n 's/^PATH=//p')" = "$child_path" ] ||
  die "the server's PATH is not the one status shows"

say "check 9: SIGTERM stops the app the same way as Quit"
kill -TERM "$tray_pid"
wait_exit "$tray_pid" SIGTERM
nothing_left "SIGTERM" "$fixed_pid" "$HOME/.rmcp-mux/sockets/fixed.sock" "$HOME/.rmcp-mux/control.sock"

say "check 10: a broken config starts the app showing the error; a second app on the same config says it is already running"
broken="$work/broken.toml"
printf '[daemon]\ncontrol_socket = "%s"\n\n[servers.typo]\ncmdd = "x"\n' "$work/run3/control.sock" >"$broken"
broken_real="$(realpath "$broken")"
# A launch-at-login entry for this config written by another executable (the app was moved):
# the app rewrites it at start to run itself.
mkdir -p "$XDG_CONFIG_HOME/autostart"
printf '[Desktop Entry]\nType=Application\nVersion=1.0\nName=rmcp-mux\nComment=rmcp-muxstartup script\nExec=/moved/away/rmcp-mux --tray --config %s\nStartupNotify=false\nTerminal=false\n' \
  "$broken_real" >"$desktop"
PATH="$work/bin:$PATH" RMCP_MUX_LOG=info,rmcp_mux::tray=debug "$bin" --tray --config "$broken" >"$out/tray-broken.log" 2>&1 &
tray_pid=$!
pids+=("$tray_pid")
find_item "$tray_pid"
wait_for 20 "'Config not applied: FILE:LINE:' in the menu" menu_has \
  "Config not applied: $broken_real:5:[0-9]*: .*cmdd.*${T}disabled${T}-${T}item"
grep -qx "Exec=$(realpath "$bin") --tray --config $broken_real" "$desktop" ||
  die "the stale launch-at-login entry was not rewritten: $(cat "$desktop")"
menu_has "Launch at login${T}enabled${T}checked${T}item" || die "Launch at login is not checked"
: >"$work/opened"
click "$(menu_id "Open config")"
wait_for 10 "Open config to open the broken config" grep -qx -- "$broken_real" "$work/opened"
# `status` reaches the app through the control socket found leniently in the broken file.
"$bin" status --config "$broken" | grep -q "config error" || die "status does not show the config error"
rc=0
timeout 30 "$bin" --tray --config "$broken" >"$out/tray-second.log" 2>&1 || rc=$?
[ "$rc" = 1 ] || die "a second app on a held lock exited $rc, expected 1: $(cat "$out/tray-second.log")"
grep -q "already running" "$out/tray-second.log" || die "the second app did not say why: $(cat "$out/tray-second.log")"
wait_for 10 "the 'already running' notification" grep -q 'string "rmcp-mux is already running"' "$out/notifications.log"
kill -0 "$tray_pid" 2>/dev/null || die "the first app ended when a second one was started"
click "$(menu_id "Quit rmcp-mux")"
wait_exit "$tray_pid" Quit
nothing_left "Quit with a broken config" "$work/run3/control.sock"

say "check 11: a first launch with Cursor and Claude Code configured: set up, connect, restore"
# A home of its own with the two hosts' files; servers that really start (server-memory in both,
# deduplicated, and one fake server in each).
h2="$work/home2"
mkdir -p "$h2/.cursor" "$h2/.config"
cat >"$h2/.cursor/mcp.json" <<EOF
{
  // Cursor's own comment, kept byte for byte
  "mcpServers": {
    "memory": { "command": "node", "args": ["$memory_js"], "env": { "MEMORY_FILE_PATH": "$work/memory2.jsonl" } },
    "clock": { "command": "$fake", "args": ["--server-version", "2.0"] }
  }
}
EOF
cat >"$h2/.claude.json" <<EOF
{
  "numStartups": 3,
  "mcpServers": {
    "memory": { "type": "stdio", "command": "node", "args": ["$memory_js"], "env": { "MEMORY_FILE_PATH": "$work/memory2.jsonl" } },
    "notes": { "type": "stdio", "command": "$fake", "args": ["--server-version", "3.0"] }
  }
}
EOF
cp "$h2/.cursor/mcp.json" "$work/cursor.orig"
cp "$h2/.claude.json" "$work/claude.orig"
cfg2="$h2/.rmcp-mux/mux.toml"
echo no >"$work/answer"
: >"$work/dialogs.log"
in_h2() { HOME="$h2" XDG_CONFIG_HOME="$h2/.config" XDG_DATA_HOME="$h2/.local/share" XDG_CACHE_HOME="$h2/.cache" "$@"; }
# `env` execs the app: $! is its PID. The dialogs are answered from $work/answer and logged.
env HOME="$h2" XDG_CONFIG_HOME="$h2/.config" XDG_DATA_HOME="$h2/.local/share" XDG_CACHE_HOME="$h2/.cache" \
  RMCP_MUX_DIALOG_ANSWER="file:$work/answer" RMCP_MUX_DIALOG_LOG="$work/dialogs.log" \
  RMCP_MUX_LOG=info,rmcp_mux::tray=debug "$bin" --tray --config "$cfg2" >"$out/tray-setup.log" 2>&1 &
tray_pid=$!
pids+=("$tray_pid")
find_item "$tray_pid"
H="Hosts > "
wait_for 20 "the first-run entry" menu_has "Set up from your apps…${T}enabled${T}-${T}item"
for line in \
  "${H}Claude Code — 0 of 2 servers through rmcp-mux${T}enabled${T}-${T}submenu" \
  "${H}Cursor — 0 of 2 servers through rmcp-mux${T}enabled${T}-${T}submenu" \
  "${H}Cursor — 0 of 2 servers through rmcp-mux > Connect to rmcp-mux${T}enabled${T}-${T}item" \
  "${H}Cursor — 0 of 2 servers through rmcp-mux > Restore original${T}disabled${T}-${T}item" \
  "${H}Cursor — 0 of 2 servers through rmcp-mux > Open its config file${T}enabled${T}-${T}item"; do
  menu_has "$line" || die "menu line missing: $line"
done
click "$(menu_id "Set up from your apps…")"
status2() { in_h2 "$bin" status --json --config "$cfg2"; }
all_running() {
  [ "$(status2 | python3 -c "import json,sys; print(sorted((s['name'], s['state']) for s in json.load(sys.stdin)['servers']))")" = \
    "[('clock', 'running'), ('memory', 'running'), ('notes', 'running')]" ]
}
wait_for 60 "the imported servers running" all_running
wait_for 10 "the setup notification" grep -q 'string "3 servers from Claude Code and Cursor"' "$out/notifications.log"
wait_for 10 "the normal menu after setup" menu_has "3 servers${M}${T}disabled${T}-${T}item"
menu_has "Set up from your apps…${T}enabled${T}-${T}item" && die "the first-run entry is still offered"
menu_has "memory${T}enabled${T}-${T}submenu" || die "memory's submenu after setup"
cmp -s "$h2/.cursor/mcp.json" "$work/cursor.orig" || die "setup changed Cursor's file"

cursor="${H}Cursor — 0 of 2 servers through rmcp-mux"
click "$(menu_id "$cursor > Connect to rmcp-mux")"
wait_for 10 "the connect question answered no" grep -qx "answered: no" "$work/dialogs.log"
grep -qx "question: Connect Cursor to rmcp-mux?" "$work/dialogs.log" || die "the question: $(cat "$work/dialogs.log")"
for l in "2 entries of Cursor's config will reach rmcp-mux through rmcp-mux-proxy:" "$h2/.cursor/mcp.json" "  • memory" "  • clock"; do
  grep -qxF -- "$l" "$work/dialogs.log" || die "the question does not say '$l': $(cat "$work/dialogs.log")"
done
# The job ends after the answer; its last word is in the app's log.
wait_for 10 "the cancelled connect in the log" sh -c \
  "HOME='$h2' '$bin' logs --config '$cfg2' -n 1000 | grep -q 'connect cancelled'"
cmp -s "$h2/.cursor/mcp.json" "$work/cursor.orig" || die "answering no changed Cursor's file"
ls "$h2"/.cursor/mcp.json.rmcp-mux-backup-* >/dev/null 2>&1 && die "answering no left a backup"

# One real dialog (rfd's GTK dialog on the loop's thread): it shows, the menu keeps answering
# over D-Bus while it is open, and Escape cancels it.
echo ask >"$work/answer"
click "$(menu_id "$cursor > Connect to rmcp-mux")"
wait_for 10 "the real confirmation dialog" xdotool search --name "^Connect Cursor to rmcp-mux"
menu_has "3 servers${M}${T}disabled${T}-${T}item" || die "the menu does not answer while a dialog is open"
dialog="$(xdotool search --name "^Connect Cursor to rmcp-mux" | head -n1)"
timeout 5 xdotool windowactivate --sync "$dialog" || die "cannot focus the dialog"
xdotool key Escape
wait_for 10 "the dialog closed" sh -c "! xdotool search --name '^Connect Cursor to rmcp-mux'"
wait_for 10 "the second cancelled connect in the log" sh -c \
  "[ \"\$(HOME='$h2' '$bin' logs --config '$cfg2' -n 1000 | grep -c 'connect cancelled')\" = 2 ]"
cmp -s "$h2/.cursor/mcp.json" "$work/cursor.orig" || die "cancelling the dialog changed Cursor's file"

echo yes >"$work/answer"
click "$(menu_id "$cursor > Connect to rmcp-mux")"
wait_for 20 "Cursor with 2 of 2 servers through rmcp-mux" menu_has \
  "${H}Cursor — 2 of 2 servers through rmcp-mux${T}enabled${T}-${T}submenu"
menu_has "${H}Claude Code — 0 of 2 servers through rmcp-mux${T}enabled${T}-${T}submenu" || die "Claude Code changed too"
menu_has "${H}Cursor — 2 of 2 servers through rmcp-mux > Connect to rmcp-mux${T}disabled${T}-${T}item" ||
  die "Connect still enabled with everything connected"
wait_for 10 "the connect notification" grep -q 'string "Connected Cursor to rmcp-mux"' "$out/notifications.log"
grep -q 'string "2 servers now run through rmcp-mux; restart Cursor to pick it up."' "$out/notifications.log" ||
  die "the connect notification does not carry Cursor's restart hint"
python3 - "$h2/.cursor/mcp.json" "$root/target/debug/rmcp-mux-proxy" "$h2/.rmcp-mux/sockets" <<'PY' || die "Cursor's file after Connect: $(cat "$h2/.cursor/mcp.json")"
import re, json, sys
text = open(sys.argv[1]).read()
assert "// Cursor's own comment, kept byte for byte" in text
servers = json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.M))["mcpServers"]
for name in ("memory", "clock"):
    e = servers[name]
    assert e["command"] == sys.argv[2], e
    assert e["args"][:2] == ["--socket", f"{sys.argv[3]}/{name}.sock"], e
PY

click "$(menu_id "${H}Cursor — 2 of 2 servers through rmcp-mux > Restore original")"
wait_for 20 "Cursor back to 0 of 2" menu_has "$cursor${T}enabled${T}-${T}submenu"
cmp "$h2/.cursor/mcp.json" "$work/cursor.orig" || die "Restore original did not put Cursor's file back byte for byte"
wait_for 10 "the restore notification" grep -q "string \"Restored Cursor's config\"" "$out/notifications.log"

# A broken host file: the error, with the file and line, is a dialog.
printf '{\n  "mcpServers": {,\n}\n' >"$h2/.claude.json"
click "$(menu_id "${H}Claude Code — 0 of 2 servers through rmcp-mux > Connect to rmcp-mux")"
wait_for 10 "the error dialog" grep -qx "error: Cannot connect Claude Code to rmcp-mux" "$work/dialogs.log"
grep -q "^$h2/.claude.json:2:[0-9]*: " "$work/dialogs.log" || die "the error dialog does not name the file and line: $(cat "$work/dialogs.log")"
wait_for 10 "the broken host in the menu" menu_has "${H}Claude Code — cannot read its config${T}enabled${T}-${T}submenu"
cp "$work/claude.orig" "$h2/.claude.json"

memory2_pid="$(status2 | python3 -c "import json,sys; print([s['pid'] for s in json.load(sys.stdin)['servers'] if s['name']=='memory'][0])")"
click "$(menu_id "Quit rmcp-mux")"
wait_exit "$tray_pid" "Quit after setup"
nothing_left "Quit after setup" "$memory2_pid" "$h2/.rmcp-mux/sockets/memory.sock"

say "all checks passed (menu: $out/menu.txt, screenshot: $out/menu.png)"
