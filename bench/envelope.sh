#!/usr/bin/env bash
# Envelope-filter benchmark on loopback: what rDNS + DNSBL + SPF +
# greylisting cost the gateway, and the same checks in Haraka. smtp-source
# sends to
#   gateway-memory   the gateway as bench/load.sh runs it (memory: state,
#                    warn logs): reference only
#   gateway-plain    the gateway, no DNS filters, state in Redis, info logs
#   gateway-filters  the same plus filters rdns (PTR + FCrDNS), dnsbl (3
#                    zones), spf, greylist (client already passed)
#   haraka           Haraka with fcrdns, dns-list (same zones), spf,
#                    greylist (same Redis), queue/smtp_forward
# all relaying to one smtp-sink, all resolving through bench/dnsserver on
# 127.0.0.1. Every timed run is checked: the sink must count every message
# and the server's log must show each one accepted; a mismatch fails the
# script. See bench/README.md.
#
# Environment (all optional):
#   SCENARIOS="gateway-memory gateway-plain gateway-filters haraka"
#   SESSIONS=20 MSGS=5000          concurrent sessions and messages per run
#   LAT_SCENARIOS=$SCENARIOS       also run these with one session ("" to skip)
#   LAT_MSGS=1000                  messages per single-session run
#   MSG_SIZE=4096 WARMUP=1000      payload bytes; untimed messages per scenario
#   REPEAT=3                       rounds (median reported); each round runs
#                                  every scenario once, in turn
#   RUN_TIMEOUT=180                max seconds per smtp-source run
#   GREY_DELAY=2                   greylisting delay (gateway and Haraka), s
#   HARAKA_DIR=path                npm prefix holding node_modules/Haraka
#                                  (default: npm install into the temp dir)
#   HARAKA_PKGS="Haraka@3.3.4 ..." what that npm install installs
#   HARAKA_NODES=$(nproc)          Haraka worker processes (smtp.ini nodes)
#   HARAKA_NODELAY=0               1: Nagle's algorithm off on Haraka's sockets
#                                  (Node leaves it on; see bench/README.md)
#   GATEWAY_BIN=path               gateway binary (default: build ./cmd/gateway)
#   BENCH_SAVE=1                   also write bench/results-envelope-<date>.md
#   BENCH_MAX_SECONDS=1200         watchdog for the whole script
#   BENCH_KEEP_TMP=1               keep the temp dir (logs, configs)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCENARIOS=${SCENARIOS:-gateway-memory gateway-plain gateway-filters haraka}
SESSIONS=${SESSIONS:-20}
MSGS=${MSGS:-5000}
LAT_SCENARIOS=${LAT_SCENARIOS-$SCENARIOS}
LAT_MSGS=${LAT_MSGS:-1000}
MSG_SIZE=${MSG_SIZE:-4096}
WARMUP=${WARMUP:-1000}
REPEAT=${REPEAT:-3}
RUN_TIMEOUT=${RUN_TIMEOUT:-180}
DELIVER_TIMEOUT=${DELIVER_TIMEOUT:-30}
GREY_DELAY=${GREY_DELAY:-2}
HARAKA_PKGS=${HARAKA_PKGS:-Haraka@3.3.4 haraka-plugin-fcrdns@1.2.1 haraka-plugin-dns-list@1.3.0 haraka-plugin-spf@1.3.0 haraka-plugin-greylist@1.2.1}
HARAKA_NODES=${HARAKA_NODES:-$(nproc)}
HARAKA_NODELAY=${HARAKA_NODELAY:-0}
FROM=sender@example.net
TO=user@example.com
HELO=source.example.net # what 127.0.0.1's PTR names (bench/dnsserver/bench.zone)
ZONES=(bl1.bench.test bl2.bench.test bl3.bench.test)

[[ -x $SMTP_SOURCE && -x $SMTP_SINK ]] || die "need $SMTP_SOURCE and $SMTP_SINK (apt-get install postfix)"
command -v redis-server >/dev/null || die "need redis-server (apt-get install redis-server)"
command -v python3 >/dev/null || die "need python3 (the probes)"
bench_init envelope "${BENCH_MAX_SECONDS:-1200}"
raise_nofile 65536
SRC_FLAGS=(-4 -l "$MSG_SIZE" -M "$HELO" -f "$FROM" -t "$TO")
FAILURES=()

fail_run() { log "MISMATCH: $*"; FAILURES+=("$*"); }

# ---- shared services: sink, DNS, Redis ----

SINK_PORT=$(free_port)
SINK_OUT=$BENCH_TMP/sink.out
start_sink "$SINK_PORT" "$SINK_OUT" 1024
log "smtp-sink (pid $SINK_PID) on 127.0.0.1:$SINK_PORT"

build_go_tool dnsserver || die "cannot build bench/dnsserver"
start_dnsserver

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
	--daemonize no --dir "$BENCH_TMP" >"$BENCH_TMP/redis.log" 2>&1 &
REDIS_PID=$!
BG_PIDS+=("$REDIS_PID")
for _ in $(seq 100); do [[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && break; sleep 0.1; done
[[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] || die "redis-server did not start: $(tail -5 "$BENCH_TMP/redis.log")"
log "redis-server (pid $REDIS_PID) on 127.0.0.1:$REDIS_PORT"
redis_cmds() { redis-cli -p "$REDIS_PORT" info stats | tr -d '\r' | sed -n 's/^total_commands_processed://p'; }

# ---- the servers under test ----

declare -A PORT PIDS LOGF # scenario -> port, server pids, log file

# The filters under test; nothing exempts 127.0.0.1
# (relay.networks stays empty: relay networks skip the filters).
GW_FILTERS="dns: {servers: [\"127.0.0.1:$DNS_PORT\"], timeout: 2s}
filters:
  rdns: {require_ptr: true, require_fcrdns: true, action: reject}
  dnsbl: {zones: [{zone: ${ZONES[0]}}, {zone: ${ZONES[1]}}, {zone: ${ZONES[2]}}], threshold: 1}
  spf: {fail: reject, softfail: tag}
  greylist: {delay: ${GREY_DELAY}s, expire: 4h, pass_ttl: 36d}"

start_gateway_scenario() { # scenario
	local scen=$1 port extra=""
	port=$(free_port)
	case $scen in
	gateway-memory) GATEWAY_STATE=memory: GATEWAY_LOG_LEVEL=warn ;;
	gateway-plain) GATEWAY_STATE="redis://127.0.0.1:$REDIS_PORT/1" GATEWAY_LOG_LEVEL=info ;;
	gateway-filters) GATEWAY_STATE="redis://127.0.0.1:$REDIS_PORT/2" GATEWAY_LOG_LEVEL=info extra=$GW_FILTERS ;;
	esac
	# the same limits for all: one client must not be throttled
	GATEWAY_LIMITS="max_connections_per_ip: 1000, connection_rate_per_ip: 1000000/1s"
	start_gateway "$port" "$SINK_PORT" "$extra" || return 1
	PORT[$scen]=$port PIDS[$scen]=$GW_PID LOGF[$scen]=$GW_LOG
}

# write_haraka_config DIR PORT: the instance's config. Equivalents of the
# gateway's filters: fcrdns rejects without PTR or FCrDNS; dns-list rejects
# a client on any zone (all searched; its periodic zone test is off, as the
# gateway has none); spf rejects MAIL FROM fail, tempfails temperror; the
# greylist period is GREY_DELAY. bench_dns (bench/haraka) comes first so
# the others resolve through dnsserver.
write_haraka_config() {
	local d=$1 port=$2 c=$1/config
	cp "$BENCH_DIR/haraka/bench_dns.js" "$d/plugins/"
	printf 'server=127.0.0.1:%s\nnodelay=%s\n' "$DNS_PORT" "$( ((HARAKA_NODELAY)) && echo true || echo false)" >"$c/bench_dns.ini"
	printf '%s\n' bench_dns fcrdns dns-list spf rcpt_to.in_host_list greylist queue/smtp_forward >"$c/plugins"
	echo haraka.bench.test >"$c/me"
	echo example.com >"$c/host_list"
	printf 'listen=127.0.0.1:%s\nnodes=%s\n' "$port" "$HARAKA_NODES" >"$c/smtp.ini"
	# notice: one line per connection, command and queued message, about
	# what the gateway logs at info
	printf '[main]\nlevel=notice\ntimestamps=true\n' >"$c/log.ini"
	printf '[reject]\nno_rdns=true\nno_fcrdns=true\n' >"$c/fcrdns.ini"
	printf '[main]\nperiodic_checks=0\nzones=%s\nsearch=all\n[stats]\nenable=false\n' "$(
		IFS=,
		echo "${ZONES[*]}"
	)" >"$c/dns-list.ini"
	printf '[deny]\nmfrom_fail=true\n[defer]\nmfrom_temperror=true\n' >"$c/spf.ini"
	printf '[redis]\nhost=127.0.0.1\nport=%s\ndb=3\n[period]\nblack=%s\ngrey=14400\nwhite=3110400\n' \
		"$REDIS_PORT" "$GREY_DELAY" >"$c/greylist.ini"
	printf 'host=127.0.0.1\nport=%s\nenable_tls=false\n' "$SINK_PORT" >"$c/smtp_forward.ini"
}

# ---- checks ----

# accepted SCENARIO: messages the server logged as accepted so far, and
# refused (a refusal or tempfail of any kind) as "ACCEPTED REFUSED".
accepted() {
	local f=${LOGF[$1]} a r
	case $1 in
	gateway-memory) echo "0 0" && return ;; # warn level logs no messages
	haraka)
		a=$(grep -c '\[core\] queue code=OK' "$f" || true)
		r=$(grep -cE 'code=(DENY|DENYSOFT|DENYDISCONNECT|DENYSOFTDISCONNECT) ' "$f" || true)
		;;
	*)
		a=$(grep -c '"outcome":"delivered"' "$f" || true)
		r=$(($(grep -c '"outcome":' "$f" || true) - a))
		;;
	esac
	echo "$a $r"
}

# verify SCENARIO COUNT SINK_BEFORE "ACCEPTED REFUSED before": every message
# reached the sink, and the server logged each one accepted, none refused.
verify() {
	local scen=$1 m=$2 sink0=$3 a0 r0 a1 r1 got
	read -r a0 r0 <<<"$4"
	wait_sink_count "$SINK_OUT" $((sink0 + m)) "$DELIVER_TIMEOUT" >/dev/null || true
	got=$(($(sink_count "$SINK_OUT") - sink0))
	((got == m)) || { fail_run "$scen: the sink received $got of $m messages"; return 1; }
	[[ $scen == gateway-memory ]] && return 0
	for _ in $(seq 50); do # the server may log just after its reply
		read -r a1 r1 <<<"$(accepted "$scen")"
		((a1 - a0 >= m)) && break
		sleep 0.1
	done
	if ((a1 - a0 != m || r1 - r0 != 0)); then
		fail_run "$scen: its log shows $((a1 - a0)) of $m messages accepted, $((r1 - r0)) refused or deferred"
		return 1
	fi
}

# probe SCENARIO SRC_IP MAIL_FROM EXPECT: one SMTP session from SRC_IP;
# EXPECT is the class of the first reply that is not 2xx/3xx (4 or 5), or
# 2 when the message must be accepted. Dies when the server disagrees.
probe() {
	local scen=$1 src=$2 from=$3 want=$4 got
	got=$(timeout 30 python3 - "${PORT[$scen]}" "$src" "$from" "$TO" <<'EOF'
import smtplib, sys
port, src, sender, rcpt = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def out(code, msg):
    if isinstance(msg, bytes):
        msg = msg.decode(errors="replace")
    print(code, " ".join(str(msg).split()))
    sys.exit(0)
try:
    s = smtplib.SMTP("127.0.0.1", port, source_address=(src, 0), timeout=20)
    for step in (lambda: s.ehlo("probe.example.net"), lambda: s.mail(sender), lambda: s.rcpt(rcpt),
                 lambda: s.data(b"Subject: probe\r\n\r\nprobe\r\n")):
        code, msg = step()
        if code >= 400:
            out(code, msg)
    s.quit()
    out(code, msg)
except smtplib.SMTPConnectError as e:
    out(e.smtp_code, e.smtp_error)
except smtplib.SMTPResponseException as e:
    out(e.smtp_code, e.smtp_error)
except (smtplib.SMTPServerDisconnected, OSError) as e:
    out(0, e)
EOF
	) || got="0 probe failed"
	if [[ ${got:0:1} != "$want" ]]; then
		die "$scen probe from $src, MAIL FROM $from: want ${want}xx, got: $got (are the filters live?)"
	fi
	log "  probe $scen from $src <$from>: $got"
}

# warm_up SCENARIO: for a filtering server, one message (greylisted), a
# wait past the delay, one more (passed: the client network's pass record
# now exists), and the probes. Then WARMUP messages.
warm_up() {
	local scen=$1 port=${PORT[$1]} sink0 acc0 logf=$BENCH_TMP/$1-warmup.log
	if [[ $scen == gateway-filters || $scen == haraka ]]; then
		log "  $scen: greylisting 127.0.0.1 once, waiting $((GREY_DELAY + 1))s"
		if source_run "$port" 1 1 "$logf" >/dev/null; then
			die "$scen: the first message was not greylisted: greylisting is not live"
		fi
		grep -q ' 451 ' "$logf" || die "$scen: first message: want 451, smtp-source said: $(tail -1 "$logf")"
		sleep $((GREY_DELAY + 1))
		source_run "$port" 1 1 "$logf" >/dev/null || die "$scen: still refused after the greylisting delay: $(tail -1 "$logf")"
		probe "$scen" 127.0.0.1 "$FROM" 2
		probe "$scen" 127.0.0.2 "$FROM" 5     # on bl2.bench.test
		probe "$scen" 127.0.0.3 "$FROM" 5     # no PTR
		probe "$scen" 127.0.0.1 probe@spf-fail.example.net 5
		probe "$scen" 127.0.1.1 "$FROM" 4     # new network: greylisted
	fi
	((WARMUP > 0)) || return 0
	sink0=$(sink_count "$SINK_OUT")
	acc0=$(accepted "$scen")
	source_run "$port" "$SESSIONS" "$WARMUP" "$logf" >/dev/null || die "$scen warm-up failed: $(tail -2 "$logf")"
	verify "$scen" "$WARMUP" "$sink0" "$acc0" || die "$scen warm-up: not every message got through"
}

# ---- measuring ----

declare -A SECS DNSQ REDISC CPU # "scenario/sessions" -> per-run values

# timed_run SCENARIO SESSIONS COUNT ROUND: one checked run; appends its
# seconds, DNS queries, Redis commands and server CPU to the tables.
timed_run() {
	local scen=$1 s=$2 m=$3 i=$4 k="$1/$2" logf t t0 t1 rc=0 sink0 acc0 dns0 red0 cpu0
	logf=$BENCH_TMP/$scen-s$s-$i.log
	sink0=$(sink_count "$SINK_OUT")
	acc0=$(accepted "$scen")
	dns0=$(dns_queries) red0=$(redis_cmds)
	# shellcheck disable=SC2086
	cpu0=$(cpu_ticks ${PIDS[$scen]})
	t=$(source_run "${PORT[$scen]}" "$s" "$m" "$logf") || rc=$?
	read -r t0 t1 <<<"$t"
	if ((rc != 0)); then
		fail_run "$scen s=$s run $i: smtp-source exit $rc: $(tail -2 "$logf" | tr '\n' ' ')"
		SECS[$k]+=" -"
		return
	fi
	if ! verify "$scen" "$m" "$sink0" "$acc0"; then
		SECS[$k]+=" -"
		return
	fi
	SECS[$k]+=" $(elapsed "$t0" "$t1")"
	DNSQ[$k]+=" $(($(dns_queries) - dns0))"
	REDISC[$k]+=" $(($(redis_cmds) - red0 - 1))" # minus our own INFO
	# shellcheck disable=SC2086
	CPU[$k]+=" $(($(cpu_ticks ${PIDS[$scen]}) - cpu0))"
	log "$(printf '  %-16s s=%-2s run %d: %7.3fs %6s msgs/s' "$scen" "$s" "$i" "$(elapsed "$t0" "$t1")" "$(rate "$m" "$(elapsed "$t0" "$t1")")")"
}

# ---- run ----

ACTIVE=()
for scen in $SCENARIOS; do
	case $scen in
	gateway-memory | gateway-plain | gateway-filters)
		[[ -n ${GW_BIN:-} ]] || find_gateway || die "no gateway to measure"
		start_gateway_scenario "$scen" || die "$scen did not start"
		;;
	haraka) start_haraka haraka write_haraka_config "$HARAKA_PKGS" || die "Haraka did not start (HARAKA_DIR, npm?)" ;;
	*) die "unknown scenario $scen" ;;
	esac
	ACTIVE+=("$scen")
done
for scen in "${ACTIVE[@]}"; do
	log "== warm-up $scen (127.0.0.1:${PORT[$scen]})"
	warm_up "$scen"
done

runs "$SESSIONS" "$MSGS" "${ACTIVE[@]}"
LAT=()
for scen in $LAT_SCENARIOS; do [[ -n ${PORT[$scen]:-} ]] && LAT+=("$scen"); done
((${#LAT[@]})) && [[ $SESSIONS != 1 ]] && runs 1 "$LAT_MSGS" "${LAT[@]}"

# ---- results ----

declare -A RATE MSPM CPUPM
ROWS=()
for s in "$SESSIONS" 1; do
	m=$MSGS
	[[ $s == 1 && $SESSIONS != 1 ]] && m=$LAT_MSGS
	for scen in "${ACTIVE[@]}"; do
		k="$scen/$s"
		[[ -n ${SECS[$k]:-} ]] || continue
		# shellcheck disable=SC2086
		sec=$(median ${SECS[$k]})
		RATE[$k]=$(rate "$m" "$sec")
		[[ $sec == - ]] && RATE[$k]=-
		MSPM[$k]=$(ms_per_msg "$s" "$sec" "$m")
		# shellcheck disable=SC2086
		CPUPM[$k]=$(ticks_ms "$m" ${CPU[$k]:--})
		# shellcheck disable=SC2086
		ROWS+=("$scen|$s|$m|$sec|${RATE[$k]}|${MSPM[$k]}|$(per "$m" ${DNSQ[$k]:--})|$(per "$m" ${REDISC[$k]:--})|${CPUPM[$k]}|$(spread ${SECS[$k]})")
	done
	[[ $SESSIONS == 1 ]] && break
done

s=$SESSIONS
SUMMARY=(
	"sessions=$s: gateway-filters/haraka = $(ratio "${RATE[gateway-filters/$s]:-}" "${RATE[haraka/$s]:-}") (target >= 5)"
	"sessions=$s: gateway-filters/gateway-plain = $(ratio "${RATE[gateway-filters/$s]:-}" "${RATE[gateway-plain/$s]:-}") (target >= 0.9); gateway-plain/gateway-memory = $(ratio "${RATE[gateway-plain/$s]:-}" "${RATE[gateway-memory/$s]:-}")"
	"sessions=$s: server CPU per message, haraka/gateway-filters = $(ratio "${CPUPM[haraka/$s]:-}" "${CPUPM[gateway-filters/$s]:-}"); gateway-filters - gateway-plain = $(ms_diff "${CPUPM[gateway-filters/$s]:-}" "${CPUPM[gateway-plain/$s]:-}") ms"
	"sessions=$s: added latency per message, gateway-filters - gateway-plain = $(ms_diff "${MSPM[gateway-filters/$s]:-}" "${MSPM[gateway-plain/$s]:-}") ms; haraka - gateway-filters = $(ms_diff "${MSPM[haraka/$s]:-}" "${MSPM[gateway-filters/$s]:-}") ms"
)
if [[ $s != 1 ]] && ((${#LAT[@]})); then
	SUMMARY+=("sessions=1: added latency per message, gateway-filters - gateway-plain = $(ms_diff "${MSPM[gateway-filters/1]:-}" "${MSPM[gateway-plain/1]:-}") ms; haraka - gateway-filters = $(ms_diff "${MSPM[haraka/1]:-}" "${MSPM[gateway-filters/1]:-}") ms")
fi

HEAD="Results (median of $REPEAT runs): ${MSG_SIZE}-byte messages, new connection per message, $(nproc) CPUs, Haraka ${HARAKA_NODES} worker(s)$( ((HARAKA_NODELAY)) && echo ", Nagle off" || true)"
echo
echo "$HEAD"
echo
print_table() {
	md_table "scenario|sessions|messages|seconds|msgs/s|ms/msg per session|DNS queries/msg|Redis cmds/msg|server CPU ms/msg|runs" \
		"---|---:|---:|---:|---:|---:|---:|---:|---:|---" "${ROWS[@]}"
}
print_table
echo
for l in "${SUMMARY[@]}"; do echo "- $l"; done
if ((${#FAILURES[@]})); then
	echo
	echo "FAILED CHECKS (these runs are left out of the figures):"
	for l in "${FAILURES[@]}"; do echo "- $l"; done
fi

if [[ ${BENCH_SAVE:-0} == 1 ]]; then
	md=$BENCH_DIR/results-envelope-$(date +%Y-%m-%d).md
	{
		echo "# Envelope-filter benchmark $(date -Iseconds)"
		echo
		echo "$HEAD; $(uname -sr); node $(node --version 2>/dev/null); $(redis-server --version | cut -d' ' -f1-3)."
		echo
		print_table
		echo
		for l in "${SUMMARY[@]}"; do echo "- $l"; done
		for l in "${FAILURES[@]}"; do echo "- FAILED: $l"; done
	} >"$md"
	log "wrote $md"
fi
((${#FAILURES[@]} == 0)) || die "${#FAILURES[@]} run(s) failed their checks"
