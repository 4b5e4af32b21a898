#!/usr/bin/env bash
# Memory per idle SMTP connection: open N idle connections (banner read,
# then nothing) with bench/idleconns, hold them, and compare the target's
# memory before and while they are held. See bench/README.md.
#
# Environment (all optional):
#   IDLE_TARGETS="sink gateway postfix"  what to measure
#   IDLE_CONNS=5000                      connections for smtp-sink / gateway
#   IDLE_CONNS_POSTFIX=200               connections for Postfix (one smtpd
#                                        process each; process limit raised)
#   IDLE_HOLD=10                         seconds to hold them
#   GATEWAY_BIN=path                     gateway binary (default: build ./cmd/gateway)
#   BENCH_MAX_SECONDS=900                watchdog for the whole script
#   BENCH_KEEP_TMP=1                     keep the temp dir
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IDLE_TARGETS=${IDLE_TARGETS:-sink gateway postfix}
IDLE_CONNS=${IDLE_CONNS:-5000}
IDLE_CONNS_POSTFIX=${IDLE_CONNS_POSTFIX:-200}
IDLE_HOLD=${IDLE_HOLD:-10}

bench_init idle "${BENCH_MAX_SECONDS:-900}"
raise_nofile $((IDLE_CONNS * 2 + 4096))
build_go_tool idleconns || die "cannot build bench/idleconns"

ROWS=()

# Memory of a single process: RSS (KB).
mem_pid() { rss_kb "$1"; }
# Memory of a Postfix instance: RSS and PSS summed over the master's
# process group (master + all its daemons). RSS double-counts shared
# pages (libraries, shared text); PSS splits them fairly.
mem_pgroup() {
	local pgid=$1 pid rss=0 pss=0 n=0
	for pid in $(ps -o pid= -g "$pgid" 2>/dev/null); do
		rss=$((rss + $(rss_kb "$pid"))); pss=$((pss + $(pss_kb "$pid"))); n=$((n + 1))
	done
	echo "$rss $pss $n"
}

# idle_run LABEL PORT N MEMCMD...: MEMCMD prints "KB [PSS_KB [NPROCS]]".
idle_run() {
	local label=$1 port=$2 n=$3
	shift 3
	local out=$BENCH_TMP/idle-$label.out before during after line open banners ipid deadline
	before=$("$@")
	"$BENCH_TMP/bin/idleconns" -addr "127.0.0.1:$port" -n "$n" -hold "${IDLE_HOLD}s" \
		-parallel 100 -dial-timeout 10s -dial-phase 60s -max-run "$((IDLE_HOLD + 90))s" \
		>"$out" 2>"$out.err" &
	ipid=$!
	BG_PIDS+=("$ipid")
	deadline=$(($(date +%s) + 80))
	until grep -q '^HOLDING' "$out"; do
		if ! kill -0 "$ipid" 2>/dev/null || (($(date +%s) >= deadline)); then
			log "$label: idleconns did not reach HOLDING: $(cat "$out" "$out.err")"
			stop_pid "$ipid"
			return 1
		fi
		sleep 0.2
	done
	sleep 1 # let the server finish its per-connection setup
	during=$("$@")
	deadline=$(($(date +%s) + IDLE_HOLD + 60))
	while kill -0 "$ipid" 2>/dev/null && (($(date +%s) < deadline)); do sleep 0.2; done
	stop_pid "$ipid"
	sleep 1
	after=$("$@")
	line=$(grep '^HOLDING' "$out")
	open=$(sed -n 's/.*open=\([0-9]*\).*/\1/p' <<<"$line")
	banners=$(sed -n 's/.*banners=\([0-9]*\).*/\1/p' <<<"$line")
	local err=""
	[[ -s $out.err ]] && err=$(head -1 "$out.err")
	local b d a per pss_note=""
	read -r b bp bn <<<"$before"
	read -r d dp dn <<<"$during"
	read -r a _ <<<"$after"
	per=$(awk -v b="$b" -v d="$d" -v n="$banners" 'BEGIN { if (n > 0) printf "%.1f", (d - b) / n; else print "-" }')
	if [[ -n ${bp:-} ]]; then
		pss_note="PSS $bp->$dp KB = $(awk -v b="$bp" -v d="$dp" -v n="$banners" 'BEGIN { if (n > 0) printf "%.1f", (d - b) / n; else print "-" }') KB/conn; processes $bn->$dn"
	fi
	ROWS+=("$label|$n|$open|$banners|$b|$d|$a|$per|$pss_note ${err}")
	log "$label: $banners/$n banners, RSS $b -> $d KB (after close: $a KB): $per KB/conn $pss_note"
}

for target in $IDLE_TARGETS; do
	case $target in
	sink)
		port=$(free_port)
		start_sink "$port" "$BENCH_TMP/idle-sink.counters" $((IDLE_CONNS + 100))
		log "== smtp-sink (pid $SINK_PID) on 127.0.0.1:$port"
		idle_run smtp-sink "$port" "$IDLE_CONNS" mem_pid "$SINK_PID" || true
		stop_pid "$SINK_PID"
		;;
	gateway)
		if ! find_gateway; then
			log "SKIP gateway"
			continue
		fi
		sport=$(free_port)
		start_sink "$sport" "$BENCH_TMP/idle-gwsink.counters" 1024
		port=$(free_port)
		if ! start_gateway "$port" "$sport"; then
			log "SKIP gateway: it did not start"
			continue
		fi
		log "== gateway (pid $GW_PID) on 127.0.0.1:$port"
		idle_run gateway "$port" "$IDLE_CONNS" mem_pid "$GW_PID" || true
		if grep -q . "$GW_LOG"; then
			log "gateway log (last 3 lines):"
			tail -3 "$GW_LOG" >&2
		fi
		stop_pid "$GW_PID"
		stop_pid "$SINK_PID"
		;;
	postfix)
		if [[ $(id -u) != 0 ]]; then
			log "SKIP postfix: needs root"
			continue
		fi
		build_go_tool pfinstance || { log "SKIP postfix: cannot build bench/pfinstance"; continue; }
		sport=$(free_port)
		start_sink "$sport" "$BENCH_TMP/idle-pfsink.counters" 1024
		port=$(free_port)
		start_postfix_relay "$port" "$sport" "default_process_limit=$((IDLE_CONNS_POSTFIX + 50))" ||
			{ log "SKIP postfix"; continue; }
		log "== postfix (master $PF_PID) on 127.0.0.1:$port"
		idle_run postfix "$port" "$IDLE_CONNS_POSTFIX" mem_pgroup "$PF_PID" || true
		timeout 60 "$BENCH_TMP/bin/pfinstance" stop -dir "$PF_DIR" || true
		stop_pid "$SINK_PID"
		;;
	*) die "unknown target $target" ;;
	esac
done

echo
echo "Idle connections held ${IDLE_HOLD}s ($(nproc) CPUs, $(uname -r)); KB/conn = (RSS while held - RSS before) / banners"
printf '%-10s %6s %6s %7s %10s %10s %10s %8s  %s\n' target conns open banners rss-before rss-held rss-after KB/conn note
for r in "${ROWS[@]}"; do
	IFS='|' read -r t n o b r1 r2 r3 p note <<<"$r"
	printf '%-10s %6s %6s %7s %10s %10s %10s %8s  %s\n' "$t" "$n" "$o" "$b" "$r1" "$r2" "$r3" "$p" "$note"
done
