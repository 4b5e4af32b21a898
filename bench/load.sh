#!/usr/bin/env bash
# SMTP load benchmark on loopback: smtp-source -> {smtp-sink directly,
# a private Postfix relaying to smtp-sink, the gateway relaying to
# smtp-sink}. Prints msgs/s per scenario; see bench/README.md.
#
# Environment (all optional):
#   SCENARIOS="direct postfix gateway"   which scenarios to run
#   SESSIONS="1 20"                      smtp-source -s values
#   MSGS_1=5000 MSGS_20=20000            messages per run, per session count
#   MSGS_DEFAULT=5000                    ... for session counts without MSGS_<n>
#   MSG_SIZE=4096                        payload bytes (smtp-source -l)
#   REUSE_CONN=0                         1: smtp-source -d (all messages of a
#                                        session over one connection)
#   WARMUP=500                           untimed messages before each scenario
#   REPEAT=3                             timed runs per figure (median reported)
#   RUN_TIMEOUT=300                      max seconds per smtp-source run
#   DELIVER_TIMEOUT=300                  max seconds to wait for the sink
#   PF_OPTS="name=value ..."             extra main.cf for the Postfix relay
#   GATEWAY_BIN=path                     gateway binary (default: build ./cmd/gateway)
#   GATEWAY_LIMITS="k: v, ..."           gateway "limits:" map (default: the
#                                        per-address connection limits lifted,
#                                        see lib.sh; dropped if unknown); e.g.
#                                        for REUSE_CONN=1 add "max_commands:
#                                        100000, max_messages_per_session: 100000"
#   GATEWAY_STATE=memory:                gateway state.store (connection rates)
#   BENCH_SAVE=1                         also write bench/results-<date>.md
#   BENCH_MAX_SECONDS=3600               watchdog for the whole script
#   BENCH_KEEP_TMP=1                     keep the temp dir (logs, configs)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCENARIOS=${SCENARIOS:-direct postfix gateway}
SESSIONS=${SESSIONS:-1 20}
MSG_SIZE=${MSG_SIZE:-4096}
REUSE_CONN=${REUSE_CONN:-0}
WARMUP=${WARMUP:-500}
REPEAT=${REPEAT:-3}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
DELIVER_TIMEOUT=${DELIVER_TIMEOUT:-300}
PF_OPTS=${PF_OPTS:-}
FROM=sender@example.net
TO=user@example.com

: "${MSGS_1:=5000}" "${MSGS_20:=20000}"
msgs_for() { local v="MSGS_$1"; echo "${!v:-${MSGS_DEFAULT:-5000}}"; }

[[ -x $SMTP_SOURCE && -x $SMTP_SINK ]] || die "need $SMTP_SOURCE and $SMTP_SINK (apt-get install postfix)"
bench_init load "${BENCH_MAX_SECONDS:-3600}"
raise_nofile 65536

SRC_FLAGS=(-4 -l "$MSG_SIZE" -M source.bench.test -f "$FROM" -t "$TO")
((REUSE_CONN)) && SRC_FLAGS+=(-d)

SINK_PORT=$(free_port)
SINK_OUT=$BENCH_TMP/sink.out
start_sink "$SINK_PORT" "$SINK_OUT" 1024
log "smtp-sink (pid $SINK_PID) on 127.0.0.1:$SINK_PORT"

ROWS=()        # "scenario|sessions|messages|seconds|rate|note"
declare -A RATE # "scenario/sessions" -> msgs/s

add_row() { # scenario sessions messages seconds note
	local r
	r=$(rate "$3" "$4")
	[[ $4 == - ]] && r=-
	ROWS+=("$1|$2|$3|$4|$r|${5:-}")
	RATE["$1/$2"]=$r
	log "$(printf '%-18s s=%-3s m=%-6s %8ss %8s msgs/s %s' "$1" "$2" "$3" "$4" "$r" "${5:-}")"
}

# measure SCENARIO PORT [postfix-dir]: warm-up, then REPEAT timed runs per
# session count; reports the median. "accepted" is smtp-source's run time;
# "delivered" runs until the sink has counted every message.
measure() {
	local scen=$1 port=$2 pfdir=${3:-} s m before t t0 t1 t2 rc logf note i
	if ((WARMUP > 0)); then
		before=$(sink_count "$SINK_OUT")
		local wt=$DELIVER_TIMEOUT
		if ! source_run "$port" 10 "$WARMUP" "$BENCH_TMP/$scen-warmup.log" >/dev/null; then
			log "$scen warm-up: smtp-source failed: $(tail -3 "$BENCH_TMP/$scen-warmup.log")"
			wt=10
		fi
		wait_sink_count "$SINK_OUT" $((before + WARMUP)) "$wt" >/dev/null ||
			log "$scen warm-up: sink got only $(($(sink_count "$SINK_OUT") - before))/$WARMUP"
	fi
	for s in $SESSIONS; do
		m=$(msgs_for "$s")
		local acc=() del=() notes=()
		for ((i = 1; i <= REPEAT; i++)); do
			logf=$BENCH_TMP/$scen-s$s-$i.log
			before=$(sink_count "$SINK_OUT")
			rc=0
			t=$(source_run "$port" "$s" "$m" "$logf") || rc=$?
			read -r t0 t1 <<<"$t"
			if ((rc != 0)); then
				notes+=("run $i FAILED: smtp-source exit $rc: $(tail -2 "$logf" | tr '\n' ' ')")
				acc+=(-)
				del+=(-)
				# let a queue (postfix) drain before the next run
				[[ -n $pfdir ]] && { wait_sink_count "$SINK_OUT" $((before + m)) 30 >/dev/null || true; }
				continue
			fi
			acc+=("$(elapsed "$t0" "$t1")")
			if t2=$(wait_sink_count "$SINK_OUT" $((before + m)) "$DELIVER_TIMEOUT"); then
				del+=("$(elapsed "$t0" "$t2")")
				# direct/gateway relay synchronously: note a lagging sink
				if [[ $scen != postfix ]] && awk -v l="$(elapsed "$t1" "$t2")" 'BEGIN { exit !(l > 0.2) }'; then
					notes+=("run $i: sink complete $(elapsed "$t1" "$t2")s after smtp-source")
				fi
			else
				del+=(-)
				notes+=("run $i: sink got $(($(sink_count "$SINK_OUT") - before))/$m within ${DELIVER_TIMEOUT}s")
				[[ -n $pfdir ]] && notes+=("queue: $(postfix_queue_size "$pfdir")")
			fi
		done
		note="$(spread "${acc[@]}") ${notes[*]}"
		if [[ $scen == postfix ]]; then
			add_row postfix-accepted "$s" "$m" "$(median "${acc[@]}")" "$note"
			add_row postfix-delivered "$s" "$m" "$(median "${del[@]}")" "$(spread "${del[@]}")"
		else
			add_row "$scen" "$s" "$m" "$(median "${acc[@]}")" "$note"
		fi
	done
}

for scen in $SCENARIOS; do
	case $scen in
	direct)
		log "== direct: smtp-source -> smtp-sink"
		measure direct "$SINK_PORT"
		;;
	postfix)
		log "== postfix: smtp-source -> postfix (relay) -> smtp-sink"
		if [[ $(id -u) != 0 ]]; then
			log "SKIP postfix: needs root"
			continue
		fi
		build_go_tool pfinstance || { log "SKIP postfix: cannot build bench/pfinstance"; continue; }
		PF_PORT=$(free_port)
		# shellcheck disable=SC2086
		start_postfix_relay "$PF_PORT" "$SINK_PORT" $PF_OPTS || { log "SKIP postfix"; continue; }
		measure postfix "$PF_PORT" "$PF_DIR"
		timeout 60 "$BENCH_TMP/bin/pfinstance" stop -dir "$PF_DIR" || true
		;;
	gateway)
		log "== gateway: smtp-source -> gateway -> smtp-sink"
		if ! find_gateway; then
			log "SKIP gateway scenario"
			continue
		fi
		GW_PORT=$(free_port)
		if ! start_gateway "$GW_PORT" "$SINK_PORT"; then
			log "SKIP gateway: it did not start"
			continue
		fi
		measure gateway "$GW_PORT"
		log "gateway RSS after the runs: $(rss_kb "$GW_PID") KB"
		if grep -q . "$GW_LOG"; then
			log "gateway log (last 5 lines):"
			tail -5 "$GW_LOG" >&2
		fi
		stop_pid "$GW_PID"
		;;
	*) die "unknown scenario $scen" ;;
	esac
done

# ---- results ----
ratio_lines=()
for s in $SESSIONS; do
	g=${RATE["gateway/$s"]:-}
	[[ -z $g ]] && continue
	ratio_lines+=("sessions=$s: gateway/direct = $(ratio "$g" "${RATE["direct/$s"]:-}"), gateway/postfix-accepted = $(ratio "$g" "${RATE["postfix-accepted/$s"]:-}")")
done

conn_mode="new connection per message"
((REUSE_CONN)) && conn_mode="one connection per session (-d)"
echo
echo "Results (median of $REPEAT runs): ${MSG_SIZE}-byte messages, $conn_mode, $(nproc) CPUs, $(postconf -h mail_version 2>/dev/null | sed 's/^/postfix /')"
printf '%-18s %8s %8s %9s %9s  %s\n' scenario sessions messages seconds msgs/s note
for r in "${ROWS[@]}"; do
	IFS='|' read -r a b c d e f <<<"$r"
	printf '%-18s %8s %8s %9s %9s  %s\n' "$a" "$b" "$c" "$d" "$e" "$f"
done
if ((${#ratio_lines[@]})); then
	printf '%s\n' "${ratio_lines[@]}"
else
	echo "(no gateway figures: ratios not computed)"
fi

if [[ ${BENCH_SAVE:-0} == 1 ]]; then
	md=$BENCH_DIR/results-$(date +%Y-%m-%d).md
	{
		echo "# Load benchmark $(date -Iseconds)"
		echo
		echo "Median of $REPEAT runs; ${MSG_SIZE}-byte messages, $conn_mode; $(nproc) CPUs, $(uname -sr), postfix $(postconf -h mail_version 2>/dev/null)."
		[[ -n $PF_OPTS ]] && echo "Postfix extra main.cf: \`$PF_OPTS\`."
		echo
		echo "| scenario | sessions | messages | seconds | msgs/s | note |"
		echo "|---|---:|---:|---:|---:|---|"
		for r in "${ROWS[@]}"; do
			IFS='|' read -r a b c d e f <<<"$r"
			echo "| $a | $b | $c | $d | $e | $f |"
		done
		echo
		for l in "${ratio_lines[@]}"; do echo "- $l"; done
	} >"$md"
	log "wrote $md"
fi
