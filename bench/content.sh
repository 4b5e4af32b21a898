#!/usr/bin/env bash
# Content-filter benchmark on loopback: what the whole data-stage
# pipeline (MIME parse, ClamAV, DKIM, DMARC, SPF, SURBL) costs the
# gateway, the same work in Haraka, and clamd's own scan rate, all on one
# clamd. bench/mixsource sends a realistic mix (50% short text, 35% HTML
# with links, 15% with a 200 KB PDF attachment; all DKIM-signed by
# example.net, SPF and DMARC p=reject in the bench zone) to
#   gateway-plain    the gateway without content filters (reference)
#   gateway-content  the gateway with filters mime, clamav, dkim, dmarc,
#                    spf and surbl
#   haraka-content   Haraka with clamd, dkim (verify), uribl (data.uribl)
#                    and spf, queue/smtp_forward
# all relaying to one smtp-sink, all resolving through bench/dnsserver;
#   clamd-only       bench/clamdrate: the same mix straight to clamd
#                    (INSTREAM, the gateway's client), the ceiling.
# Every timed run is checked: the client must see every message accepted,
# the sink must count each one, and the server's log must show each one
# accepted with every content filter having run and passed; a mismatch
# fails the script. See bench/README.md.
#
# Environment (all optional):
#   SCENARIOS="gateway-plain gateway-content haraka-content clamd-only"
#   SESSIONS=20 MSGS=1000          concurrent sessions and messages per run
#   LAT_SCENARIOS=$SCENARIOS       also run these with one session ("" to skip)
#   LAT_MSGS=200                   messages per single-session run
#   WARMUP=300                     untimed messages per scenario
#   REPEAT=3                       rounds (median reported); each round runs
#                                  every scenario once, in turn
#   MIX=text:50,html:35,attach:15  ATTACH_SIZE=204800 (bytes, before base64)
#   RUN_TIMEOUT=180                max seconds per client run
#   CLAMD_THREADS=12               clamd's MaxThreads (Debian's default)
#   CLAMD_DB=dir                   clamd's signatures (default: the one-line
#                                  test database; e.g. /var/lib/clamav for a
#                                  real one, where freshclam has run)
#   CLAMD_CONNS=$CLAMD_THREADS     the gateway's filters.clamav.connections
#   HARAKA_DIR=path                npm prefix holding node_modules/Haraka and
#                                  the plugins (default: npm install into the
#                                  temp dir)
#   HARAKA_PKGS="Haraka@3.3.4 ..." what that npm install installs
#   HARAKA_NODES=$(nproc)          Haraka worker processes (smtp.ini nodes)
#   HARAKA_NODELAY=0               1: Nagle's algorithm off on Haraka's sockets
#   GATEWAY_BIN=path               gateway binary (default: build ./cmd/gateway)
#   LOAD_MAX=3 LOAD_WAIT=60        wait up to LOAD_WAIT s for the 1-minute
#                                  load average to fall to LOAD_MAX first
#   CLAMD_CPUS=list                pin clamd to these CPUs (taskset -c, e.g. 1)
#                                  and everything else (gateway, Haraka,
#                                  clients, sink, DNS) to the others: clamd
#                                  gets the same CPUs in every scenario, so
#                                  "is clamd the bottleneck" is measured,
#                                  not which process wins the CPUs
#   OTHER_CPUS=list                the others' CPUs (default: the rest)
#   BENCH_SAVE=1                   also write bench/results-content-<date>.md
#                                  (-clamd-cpu<list> added with CLAMD_CPUS)
#   BENCH_MAX_SECONDS=600          watchdog for the whole script
#   BENCH_KEEP_TMP=1               keep the temp dir (logs, configs)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCENARIOS=${SCENARIOS:-gateway-plain gateway-content haraka-content clamd-only}
SESSIONS=${SESSIONS:-20}
MSGS=${MSGS:-1000}
LAT_SCENARIOS=${LAT_SCENARIOS-$SCENARIOS}
LAT_MSGS=${LAT_MSGS:-200}
WARMUP=${WARMUP:-300}
REPEAT=${REPEAT:-3}
MIX=${MIX:-text:50,html:35,attach:15}
ATTACH_SIZE=${ATTACH_SIZE:-204800}
RUN_TIMEOUT=${RUN_TIMEOUT:-180}
DELIVER_TIMEOUT=${DELIVER_TIMEOUT:-30}
CLAMD_THREADS=${CLAMD_THREADS:-12}
CLAMD_CONNS=${CLAMD_CONNS:-$CLAMD_THREADS}
CLAMD_BIN=${CLAMD_BIN:-/usr/sbin/clamd}
HARAKA_PKGS=${HARAKA_PKGS:-Haraka@3.3.4 haraka-plugin-clamd@1.0.6 haraka-plugin-dkim@1.3.1 haraka-plugin-uribl@2.0.0 haraka-plugin-spf@1.3.0}
NCPU=$(nproc) # before any pinning below
HARAKA_NODES=${HARAKA_NODES:-$NCPU}
HARAKA_NODELAY=${HARAKA_NODELAY:-0}
LOAD_MAX=${LOAD_MAX:-3}
LOAD_WAIT=${LOAD_WAIT:-60}
FROM=sender@example.net
TO=user@example.com
HELO=source.example.net # 127.0.0.1's PTR name (bench/dnsserver/bench.zone)
SURBL_ZONE=surbl.bench.test

[[ -x $SMTP_SINK ]] || die "need $SMTP_SINK (apt-get install postfix)"
CPU_NOTE=""
if [[ -n ${CLAMD_CPUS:-} ]]; then
	command -v taskset >/dev/null || die "CLAMD_CPUS needs taskset (util-linux)"
	if [[ -z ${OTHER_CPUS:-} ]]; then
		OTHER_CPUS=$(python3 -c 'import os,sys; c=set(); [c.update(range(int(a), int(b or a)+1)) for a,_,b in (r.partition("-") for r in sys.argv[1].split(","))]; print(",".join(str(i) for i in sorted(os.sched_getaffinity(0)-c)))' "$CLAMD_CPUS")
		[[ -n $OTHER_CPUS ]] || die "CLAMD_CPUS=$CLAMD_CPUS leaves no CPU for the rest: set OTHER_CPUS"
	fi
	# This shell and all it starts from now on (the gateway, Haraka,
	# the clients, the sink) run on OTHER_CPUS; clamd is started on
	# CLAMD_CPUS below.
	taskset -pc "$OTHER_CPUS" $$ >/dev/null || die "taskset -pc $OTHER_CPUS failed"
	CPU_NOTE=", clamd pinned to CPU(s) $CLAMD_CPUS and everything else to $OTHER_CPUS"
fi
[[ -x $CLAMD_BIN ]] || CLAMD_BIN=$(command -v clamd) || die "need clamd (apt-get install clamav-daemon)"
bench_init content "${BENCH_MAX_SECONDS:-600}"
raise_nofile 65536
CLK_TCK=$(getconf CLK_TCK)
FAILURES=()
fail_run() { log "MISMATCH: $*"; FAILURES+=("$*"); }
load1() { cut -d' ' -f1 /proc/loadavg; }

# The machine is shared: figures taken while something else is busy say
# little. Wait a while for a quiet minute, then go on regardless (the
# load at the start and end is in the results).
for ((w = 0; w < LOAD_WAIT; w += 5)); do
	awk -v l="$(load1)" -v m="$LOAD_MAX" 'BEGIN { exit !(l > m) }' || break
	((w == 0)) && log "load average $(load1) > $LOAD_MAX: waiting up to ${LOAD_WAIT}s for it to fall"
	sleep 5
done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average: $LOAD_START"

# ---- tools and shared services: sink, DNS, clamd ----

for t in dnsserver mixsource clamdrate; do build_go_tool "$t" || die "cannot build bench/$t"; done

SINK_PORT=$(free_port)
SINK_OUT=$BENCH_TMP/sink.out
start_sink "$SINK_PORT" "$SINK_OUT" 1024
log "smtp-sink (pid $SINK_PID) on 127.0.0.1:$SINK_PORT"

start_dnsserver

# clamd with the shipped one-signature test database
# (internal/clamdtest/testdata: Mailgate.Test.EICAR) unless CLAMD_DB
# names a real one, on loopback TCP. Everything else is clamd's default
# (ScanMail, ScanPDF, ScanArchive, its verdict cache); no self-check
# reloads during the runs.
CLAMD_PORT=$(free_port)
mkdir -p "$BENCH_TMP/clamd/db" "$BENCH_TMP/clamd/tmp"
if [[ -n ${CLAMD_DB:-} ]]; then
	[[ -d $CLAMD_DB ]] || die "CLAMD_DB=$CLAMD_DB is not a directory"
	CLAMD_DB_NOTE="signatures from $CLAMD_DB"
else
	CLAMD_DB=$BENCH_TMP/clamd/db
	cp "$REPO_DIR/internal/clamdtest/testdata/mailgate-test.ndb" "$CLAMD_DB/"
	CLAMD_DB_NOTE="the one-signature test database"
fi
cat >"$BENCH_TMP/clamd/clamd.conf" <<EOF
Foreground yes
DatabaseDirectory $CLAMD_DB
TemporaryDirectory $BENCH_TMP/clamd/tmp
TCPSocket $CLAMD_PORT
TCPAddr 127.0.0.1
StreamMaxLength 26214400
MaxThreads $CLAMD_THREADS
SelfCheck 0
LogSyslog no
LogTime yes
ConcurrentDatabaseReload no
EOF
${CLAMD_CPUS:+taskset -c "$CLAMD_CPUS"} "$CLAMD_BIN" --config-file="$BENCH_TMP/clamd/clamd.conf" >"$BENCH_TMP/clamd.log" 2>&1 &
CLAMD_PID=$!
BG_PIDS+=("$CLAMD_PID")
clamd_ping() { timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$CLAMD_PORT && printf 'zPING\0' >&3 && IFS= read -r -d '' r <&3 && [[ \$r == PONG ]]" 2>/dev/null; }
for _ in $(seq 1200); do clamd_ping && break; kill -0 "$CLAMD_PID" 2>/dev/null || break; sleep 0.1; done
clamd_ping || die "clamd did not answer PING: $(tail -5 "$BENCH_TMP/clamd.log")"
log "clamd $("$CLAMD_BIN" --version | cut -d/ -f1) (pid $CLAMD_PID) on 127.0.0.1:$CLAMD_PORT, MaxThreads $CLAMD_THREADS, $CLAMD_DB_NOTE"

# machine_busy: CPU time all processes of the machine have used, in
# clock ticks (user, nice and system of /proc/stat; interrupt time is left
# out, as loopback traffic's softirq time may not be charged to the
# processes that cause it).
machine_busy() { awk '/^cpu / { print $2 + $3 + $4 }' /proc/stat; }

# ---- the servers under test ----

declare -A PORT PIDS LOGF # scenario -> port, server pids, log file

# The content pipeline under test. SPF is there for DMARC (which needs
# SPF and DKIM results); nothing exempts 127.0.0.1 (relay.networks stays
# empty).
GW_CONTENT="dns: {servers: [\"127.0.0.1:$DNS_PORT\"], timeout: 2s}
filters:
  spf: {fail: reject, softfail: tag}
  mime: {}
  clamav: {address: \"tcp:127.0.0.1:$CLAMD_PORT\", on_error: tempfail, timeout: 60s, connections: $CLAMD_CONNS}
  dkim: {verify: true}
  dmarc: {reject_policy: true}
  surbl: {zones: [{zone: $SURBL_ZONE}], action: reject}"

start_gateway_scenario() { # scenario
	local scen=$1 port extra=""
	port=$(free_port)
	[[ $scen == gateway-content ]] && extra=$GW_CONTENT
	# both log one line per message (info), as Haraka does at notice
	GATEWAY_STATE=memory: GATEWAY_LOG_LEVEL=info
	GATEWAY_LIMITS="max_connections_per_ip: 1000, connection_rate_per_ip: 1000000/1s"
	start_gateway "$port" "$SINK_PORT" "$extra" || return 1
	PORT[$scen]=$port PIDS[$scen]=$GW_PID LOGF[$scen]=$GW_LOG
}

# write_haraka_config DIR PORT: the instance's config, the equivalents of
# the gateway's filters: spf rejects MAIL FROM fail; dkim verifies (no
# signing); uribl (the former core data.uribl) looks up the body's link
# domains (reduced to the registrable domain, as the gateway does) on the
# same zone; clamd scans at the same clamd and rejects a virus, or
# tempfails when clamd fails. bench_dns (bench/haraka) comes first, so
# every lookup goes to dnsserver; bench_check after the content plugins
# logs what they found for each message.
write_haraka_config() {
	local d=$1 port=$2 c=$1/config
	cp "$BENCH_DIR/haraka/bench_dns.js" "$BENCH_DIR/haraka/bench_check.js" "$d/plugins/"
	printf 'server=127.0.0.1:%s\nnodelay=%s\n' "$DNS_PORT" "$( ((HARAKA_NODELAY)) && echo true || echo false)" >"$c/bench_dns.ini"
	printf '%s\n' bench_dns spf rcpt_to.in_host_list dkim uribl clamd bench_check queue/smtp_forward >"$c/plugins"
	echo haraka.bench.test >"$c/me"
	echo example.com >"$c/host_list"
	printf 'listen=127.0.0.1:%s\nnodes=%s\n' "$port" "$HARAKA_NODES" >"$c/smtp.ini"
	# notice: one line per connection, command and queued message (and
	# bench_check's), about what the gateway logs at info
	printf '[main]\nlevel=notice\ntimestamps=true\n' >"$c/log.ini"
	printf '[deny]\nmfrom_fail=true\n[defer]\nmfrom_temperror=true\n' >"$c/spf.ini"
	printf '[sign]\nenabled=false\n[verify]\nenabled=true\n' >"$c/dkim.ini"
	# max_uris_per_list = the gateway's max_domains default
	printf '[main]\ntimeout=10\nmax_uris_per_list=50\n[%s]\nvalidate=^127\\.\nstrip_to_domain=1\nbody=1\n' "$SURBL_ZONE" >"$c/uribl.ini"
	printf '[main]\nclamd_socket=127.0.0.1:%s\ntimeout=60\n[reject]\nvirus=true\nerror=true\n' "$CLAMD_PORT" >"$c/clamd.ini"
	printf 'host=127.0.0.1\nport=%s\nenable_tls=false\n' "$SINK_PORT" >"$c/smtp_forward.ini"
}

# ---- checks ----

# What the gateway's message line must hold when every content filter
# ran and passed (filters/*: their decisions' reasons).
GW_PASSED=('"outcome":"delivered"' '"filter":"clamav","stage":"data","verdict":"continue"' '"reason":"clean"'
	'"reason":"dkim=pass d=example.net"' '"reason":"dmarc=pass header.from=example.net'
	'"filter":"surbl","stage":"data","verdict":"continue"' '"reason":"none listed of ' '"reason":"spf=pass domain example.net')

# accepted SCENARIO: "ACCEPTED REFUSED CHECKED" so far in the server's
# log: messages accepted, refused or deferred (any kind), and accepted
# with every content filter having run and passed (gateway-content:
# GW_PASSED; haraka-content: bench_check verdict=ALL-RAN; others: as
# accepted).
accepted() {
	local f=${LOGF[$1]} a r c
	case $1 in
	haraka-*)
		a=$(grep -c '\[core\] queue code=OK' "$f" || true)
		r=$(grep -cE 'code=(DENY|DENYSOFT|DENYDISCONNECT|DENYSOFTDISCONNECT) ' "$f" || true)
		c=$(grep -c '\[bench_check\] .* verdict=ALL-RAN' "$f" || true)
		;;
	gateway-content)
		a=$(grep -c '"outcome":"delivered"' "$f" || true)
		r=$(($(grep -c '"outcome":' "$f" || true) - a))
		c=$(awk -v pats="$(printf '%s\n' "${GW_PASSED[@]}")" '
			BEGIN { n = split(pats, p, "\n") }
			{ for (i = 1; i <= n; i++) if (!index($0, p[i])) next; c++ }
			END { print c + 0 }' "$f")
		;;
	*)
		a=$(grep -c '"outcome":"delivered"' "$f" || true)
		r=$(($(grep -c '"outcome":' "$f" || true) - a))
		c=$a
		;;
	esac
	echo "$a $r $c"
}

# verify SCENARIO COUNT SINK_BEFORE "ACCEPTED REFUSED CHECKED before":
# every message reached the sink, and the server logged each one
# accepted (and checked), none refused.
verify() {
	local scen=$1 m=$2 sink0=$3 a0 r0 c0 a1 r1 c1 got
	read -r a0 r0 c0 <<<"$4"
	wait_sink_count "$SINK_OUT" $((sink0 + m)) "$DELIVER_TIMEOUT" >/dev/null || true
	got=$(($(sink_count "$SINK_OUT") - sink0))
	((got == m)) || { fail_run "$scen: the sink received $got of $m messages"; return 1; }
	for _ in $(seq 50); do # the server may log just after its reply
		read -r a1 r1 c1 <<<"$(accepted "$scen")"
		((a1 - a0 >= m && c1 - c0 >= m)) && break
		sleep 0.1
	done
	if ((a1 - a0 != m || r1 - r0 != 0)); then
		fail_run "$scen: its log shows $((a1 - a0)) of $m messages accepted, $((r1 - r0)) refused or deferred"
		return 1
	fi
	if ((c1 - c0 != m)); then
		fail_run "$scen: its log shows only $((c1 - c0)) of $m messages passed by every content filter"
		return 1
	fi
}

# Each client run gets a seed no other run of this benchmark used, so no
# message is ever sent twice (clamd caches the verdicts of what it has
# seen). SEQ counts the runs; never read it from a subshell.
SEQ=0
BENCH_SEED=${BENCH_SEED:-$(date +%s)}

# client SCENARIO SESSIONS COUNT LOGFILE [flags...]: mixsource (or, for
# clamd-only, clamdrate) with a fresh seed; its RESULT line goes to
# LOGFILE. Returns its status.
client() {
	local scen=$1 s=$2 m=$3 logf=$4 seed rc=0
	shift 4
	SEQ=$((SEQ + 1))
	seed=$((BENCH_SEED * 1000 + SEQ))
	if [[ $scen == clamd-only ]]; then
		"$BENCH_TMP/bin/clamdrate" -addr "tcp:127.0.0.1:$CLAMD_PORT" -sessions "$s" -count "$m" \
			-mix "$MIX" -attach-size "$ATTACH_SIZE" -seed "$seed" -timeout "${RUN_TIMEOUT}s" "$@" >"$logf" 2>&1 || rc=$?
	else
		"$BENCH_TMP/bin/mixsource" -addr "127.0.0.1:${PORT[$scen]}" -helo "$HELO" -from "$FROM" -to "$TO" \
			-sessions "$s" -count "$m" -mix "$MIX" -attach-size "$ATTACH_SIZE" -seed "$seed" \
			-timeout "${RUN_TIMEOUT}s" "$@" >"$logf" 2>&1 || rc=$?
	fi
	echo "seed $seed" >>"$logf"
	return $rc
}

# result LOGFILE KEY: a value of the client's RESULT line.
result() { sed -n "s/^RESULT .*\\b$2=\\([^ ]*\\).*/\\1/p" "$1" | tail -n 1; }

# probe SCENARIO WANT LABEL [mixsource flags...]: one message that must
# get a reply starting with WANT (or be accepted, WANT=250).
probe() {
	local scen=$1 want=$2 label=$3 logf=$BENCH_TMP/probe.log
	shift 3
	if [[ $want == 250 ]]; then
		client "$scen" 1 1 "$logf" "$@" || die "$scen probe ($label): want it accepted, got: $(grep -v '^RESULT' "$logf" | tail -2)"
		log "  probe $scen, $label: accepted"
	else
		client "$scen" 1 1 "$logf" -expect "$want" "$@" ||
			die "$scen probe ($label): want $want, got: $(grep -v '^RESULT' "$logf" | tail -2) (is the filter live?)"
		log "  probe $scen, $label: $(sed -n 's/^REPLY //p' "$logf")"
	fi
}

# warm_up SCENARIO: probes that show each filter is live (a virus, a
# listed link, a forged DKIM signature whose author domain says
# p=reject), then WARMUP messages.
warm_up() {
	local scen=$1 logf=$BENCH_TMP/$1-warmup.log sink0 acc0 line
	case $scen in
	gateway-content)
		probe "$scen" 554 "EICAR attached" -mix eicar:1
		probe "$scen" 554 "link to $SURBL_ZONE-listed domain" -mix listed:1
		probe "$scen" 550 "DKIM body altered, MAIL FROM another domain (DMARC fails)" -mix text:1 -tamper -mail-from probe@example.org
		;;
	haraka-content)
		probe "$scen" 5 "EICAR attached" -mix eicar:1
		probe "$scen" 5 "link to $SURBL_ZONE-listed domain" -mix listed:1
		# no DMARC plugin in Haraka: the message passes, dkim says fail
		probe "$scen" 250 "DKIM body altered" -mix text:1 -tamper -mail-from probe@example.org
		sleep 0.5
		line=$(grep '\[bench_check\]' "${LOGF[$scen]}" | tail -n 1)
		[[ $line == *"dkim=fail:example.net"* ]] || die "$scen: the altered message's check line is not dkim=fail: $line"
		log "  $scen: bench_check for it: ${line#*\[bench_check\] }"
		;;
	esac
	((WARMUP > 0)) || return 0
	sink0=$(sink_count "$SINK_OUT")
	[[ $scen == clamd-only ]] || acc0=$(accepted "$scen")
	client "$scen" "$SESSIONS" "$WARMUP" "$logf" || die "$scen warm-up failed: $(tail -3 "$logf")"
	[[ $scen == clamd-only ]] && return 0
	verify "$scen" "$WARMUP" "$sink0" "$acc0" || die "$scen warm-up: not every message got through every filter"
	if [[ $scen == gateway-content ]]; then
		line=$(grep '"outcome":"delivered"' "${LOGF[$scen]}" | tail -n 1)
		log "  $scen: a message line's decisions: $(sed 's/.*"decisions":\(\[.*\]\),"reply".*/\1/' <<<"$line" | cut -c1-600)"
	fi
}

# ---- measuring ----

declare -A SECS CPU CCPU DNSQ P50 P99 OTHERS # "scenario/sessions" -> per-run values

# timed_run SCENARIO SESSIONS COUNT ROUND: one checked run; appends its
# seconds, server CPU, clamd CPU, DNS queries and latencies to the tables.
timed_run() {
	local scen=$1 s=$2 m=$3 i=$4 k="$1/$2" logf rc=0 sink0 acc0 dns0 cpu0 ccpu0 cpu1 ccpu1 secs fails lines0
	local busy0 busy1 ours0 ours1 t0 t1 others
	logf=$BENCH_TMP/$scen-s$s-$i.log
	sink0=$(sink_count "$SINK_OUT")
	[[ $scen == clamd-only ]] || acc0=$(accepted "$scen")
	[[ $scen == gateway-content ]] && lines0=$(wc -l <"${LOGF[$scen]}")
	dns0=$(dns_queries)
	# shellcheck disable=SC2086
	cpu0=$(cpu_ticks ${PIDS[$scen]:-}) ccpu0=$(cpu_ticks "$CLAMD_PID")
	busy0=$(machine_busy) ours0=$(cpu_ticks "${BG_PIDS[@]}") t0=$(now)
	client "$scen" "$s" "$m" "$logf" || rc=$?
	busy1=$(machine_busy) ours1=$(cpu_ticks "${BG_PIDS[@]}") t1=$(now)
	# shellcheck disable=SC2086
	cpu1=$(cpu_ticks ${PIDS[$scen]:-}) ccpu1=$(cpu_ticks "$CLAMD_PID")
	# others: the share of the machine's CPUs that processes outside this
	# benchmark (other users, the system) used during the run
	others=$(awk -v b=$((busy1 - busy0)) -v o=$((ours1 - ours0)) -v c="$(result "$logf" cpu_ms)" \
		-v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" -v n="$NCPU" \
		'BEGIN { x = (b - o - c * hz / 1000) / ((t1 - t0) * hz * n) * 100; printf "%.0f", x < 0 ? 0 : x }')
	secs=$(result "$logf" seconds) fails=$(result "$logf" failures)
	if ((rc != 0)) || [[ -z $secs || $fails != 0 ]]; then
		fail_run "$scen s=$s run $i: client exit $rc, failures ${fails:-?}: $(grep -v '^RESULT' "$logf" | tail -2 | tr '\n' ' ')"
		SECS[$k]+=" -"
		return
	fi
	if [[ $scen != clamd-only ]] && ! verify "$scen" "$m" "$sink0" "$acc0"; then
		SECS[$k]+=" -"
		return
	fi
	if [[ $scen == gateway-content ]]; then
		sed -n "$((lines0 + 1)),\$p" "${LOGF[$scen]}" | grep '"outcome":"delivered"' >>"$BENCH_TMP/gateway-content-s$s.lines" || true
	fi
	SECS[$k]+=" $secs"
	CPU[$k]+=" $((cpu1 - cpu0))"
	CCPU[$k]+=" $((ccpu1 - ccpu0))"
	DNSQ[$k]+=" $(($(dns_queries) - dns0))"
	P50[$k]+=" $(result "$logf" p50_ms)"
	P99[$k]+=" $(result "$logf" p99_ms)"
	OTHERS[$k]+=" $others"
	log "$(printf '  %-16s s=%-2s run %d: %7.3fs %6s msgs/s, others used %3s%% of the CPUs' "$scen" "$s" "$i" "$secs" "$(rate "$m" "$secs")" "$others")"
}

# ---- run ----

ACTIVE=()
for scen in $SCENARIOS; do
	case $scen in
	gateway-plain | gateway-content)
		[[ -n ${GW_BIN:-} ]] || find_gateway || die "no gateway to measure"
		start_gateway_scenario "$scen" || die "$scen did not start"
		;;
	haraka-content) start_haraka "$scen" write_haraka_config "$HARAKA_PKGS" || die "Haraka did not start (HARAKA_DIR, npm?)" ;;
	clamd-only) ;;
	*) die "unknown scenario $scen" ;;
	esac
	ACTIVE+=("$scen")
done
((MSGS % 20 == 0 && LAT_MSGS % 20 == 0)) || log "note: MSGS and LAT_MSGS are not multiples of 20: the last cycle of the mix is cut short"
for scen in "${ACTIVE[@]}"; do
	log "== warm-up $scen${PORT[$scen]:+ (127.0.0.1:${PORT[$scen]})}"
	warm_up "$scen"
done

# what runs logs at the start of each round
round_note() { echo "load $(load1)"; }
runs "$SESSIONS" "$MSGS" "${ACTIVE[@]}"
LAT=()
for scen in $LAT_SCENARIOS; do [[ " ${ACTIVE[*]} " == *" $scen "* ]] && LAT+=("$scen"); done
((${#LAT[@]})) && [[ $SESSIONS != 1 ]] && runs 1 "$LAT_MSGS" "${LAT[@]}"
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- results ----

declare -A RATE MSPM CPUPM CCPUPM
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
		[[ $scen == clamd-only ]] && CPUPM[$k]=-
		# shellcheck disable=SC2086
		CCPUPM[$k]=$(ticks_ms "$m" ${CCPU[$k]:--})
		# shellcheck disable=SC2086
		ROWS+=("$scen|$s|$m|$sec|${RATE[$k]}|${MSPM[$k]}|$(median ${P50[$k]:--})|$(median ${P99[$k]:--})|${CPUPM[$k]}|${CCPUPM[$k]}|$(per "$m" ${DNSQ[$k]:--})|$(median ${OTHERS[$k]:--})%|$(spread ${SECS[$k]})")
	done
	[[ $SESSIONS == 1 ]] && break
done

# pct_less A B: 100 * (1 - A/B), the share of B that A falls short by.
pct_less() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || b == 0) print "-"; else printf "%.0f%%", 100 * (1 - a / b) }'; }
# share A B: 100 * A / (A + B)
share() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || a + b == 0) print "-"; else printf "%.0f%%", 100 * a / (a + b) }'; }

SUMMARY=()
for s in "$SESSIONS" 1; do
	gc=${RATE[gateway-content/$s]:-} hc=${RATE[haraka-content/$s]:-} co=${RATE[clamd-only/$s]:-}
	SUMMARY+=("sessions=$s: gateway-content/haraka-content = $(ratio "$gc" "$hc") (target >= 2); server CPU per message, haraka/gateway = $(ratio "${CPUPM[haraka-content/$s]:-}" "${CPUPM[gateway-content/$s]:-}")")
	SUMMARY+=("sessions=$s: gateway-content/clamd-only = $(ratio "$gc" "$co"): throughput overhead $(pct_less "$gc" "$co") (target <= 20%); the gateway's share of the server CPU per message, gateway/(gateway + clamd) = $(share "${CPUPM[gateway-content/$s]:-}" "${CCPUPM[gateway-content/$s]:-}")")
	SUMMARY+=("sessions=$s: time per message, gateway-content - clamd-only = $(ms_diff "${MSPM[gateway-content/$s]:-}" "${MSPM[clamd-only/$s]:-}") ms ($(pct_less "${MSPM[clamd-only/$s]:-}" "${MSPM[gateway-content/$s]:-}") of gateway-content's); gateway-content/gateway-plain = $(ratio "$gc" "${RATE[gateway-plain/$s]:-}"), server CPU $(ms_diff "${CPUPM[gateway-content/$s]:-}" "${CPUPM[gateway-plain/$s]:-}") ms/msg")
	[[ $SESSIONS == 1 ]] && break
	((${#LAT[@]})) || break
done

# Where the gateway's time goes: each filter's time per message from its
# log lines ("us": wall time in the filter, waiting included), over the
# timed runs.
FILTER_ROWS=()
for s in "$SESSIONS" 1; do
	f=$BENCH_TMP/gateway-content-s$s.lines
	[[ -s $f ]] || continue
	FILTER_ROWS+=("$(awk -v s="$s" '
		{
			n++
			rest = $0
			while ((i = index(rest, "{\"filter\":\"")) > 0) {
				rest = substr(rest, i + 11)
				name = substr(rest, 1, index(rest, "\"") - 1)
				j = index(rest, "\"us\":")
				if (j == 0) continue
				us = substr(rest, j + 5) + 0
				sum[name] += us
				if (!(name in seen)) { seen[name] = 1; order[++k] = name }
			}
		}
		END {
			line = s "|" n
			for (x = 1; x <= k; x++) { line = line sprintf("|%s %.2f", order[x], sum[order[x]] / n / 1000); total += sum[order[x]] }
			print line sprintf("|all %.2f", total / n / 1000)
		}' "$f")")
	[[ $SESSIONS == 1 ]] && break
done

HARAKA_NOTE=""
if [[ -n ${LOGF[haraka-content]:-} ]]; then
	hp=$(grep -c '\[bench_check\] .*uribl=pass:body' "${LOGF[haraka-content]}" || true)
	hs=$(grep -c '\[bench_check\] .*uribl=skip:body' "${LOGF[haraka-content]}" || true)
	HARAKA_NOTE="haraka-content: of all the messages it took, uribl looked up the links of $hp (the plain-text ones) and found no link in $hs (the multipart ones: haraka-plugin-uribl 2.0.0 reads no MIME part, see bench/README.md)"
fi

# which gateway: a given binary, or the work tree's (commit, and whether
# the gateway's sources had uncommitted changes)
GW_DESC=""
if [[ -n ${GW_BIN:-} ]]; then
	rev=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
	if [[ -n ${GATEWAY_BIN:-} ]]; then
		GW_DESC="gateway $GATEWAY_BIN (work tree at $rev)"
	elif [[ -n $(git -C "$REPO_DIR" status --porcelain -- cmd config filters internal pipeline smtpd upstream 2>/dev/null) ]]; then
		GW_DESC="gateway built from $rev with uncommitted changes"
	else
		GW_DESC="gateway built from $rev"
	fi
fi
HEAD="Results (median of $REPEAT runs): mix $MIX (attachment $ATTACH_SIZE bytes), new connection per message, $NCPU CPUs$CPU_NOTE, clamd MaxThreads $CLAMD_THREADS (gateway clamav.connections $CLAMD_CONNS), Haraka ${HARAKA_NODES} worker(s)$( ((HARAKA_NODELAY)) && echo ", Nagle off" || true); load average $LOAD_START at the start, $LOAD_END at the end"
echo
echo "$HEAD"
echo
print_table() {
	md_table "scenario|sessions|messages|seconds|msgs/s|ms/msg per session|p50 ms|p99 ms|server CPU ms/msg|clamd CPU ms/msg|DNS queries/msg|others' CPU|runs" \
		"---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---" "${ROWS[@]}"
}
print_filters() {
	((${#FILTER_ROWS[@]})) || return 0
	echo
	echo "gateway-content, mean wall time per message in each filter (ms; from the log's \"us\", waiting for clamd and DNS included):"
	echo
	local r
	for r in "${FILTER_ROWS[@]}"; do
		IFS='|' read -ra f <<<"$r"
		echo "- sessions=${f[0]} (${f[1]} messages): ${f[*]:2}"
	done
}
print_table
echo
for l in "${SUMMARY[@]}"; do echo "- $l"; done
[[ -n $HARAKA_NOTE ]] && echo "- $HARAKA_NOTE"
print_filters
if ((${#FAILURES[@]})); then
	echo
	echo "FAILED CHECKS (these runs are left out of the figures):"
	for l in "${FAILURES[@]}"; do echo "- $l"; done
fi

if [[ ${BENCH_SAVE:-0} == 1 ]]; then
	md=$BENCH_DIR/results-content-$(date +%Y-%m-%d)${CLAMD_CPUS:+-clamd-cpu$CLAMD_CPUS}.md
	{
		echo "# Content-filter benchmark $(date -Iseconds)"
		echo
		echo "$HEAD; ${GW_DESC:+$GW_DESC; }$(uname -sr); $("$CLAMD_BIN" --version | cut -d/ -f1) with $CLAMD_DB_NOTE; node $(node --version 2>/dev/null); ${HARAKA_VERSIONS:-}."
		echo
		print_table
		echo
		for l in "${SUMMARY[@]}"; do echo "- $l"; done
		[[ -n $HARAKA_NOTE ]] && echo "- $HARAKA_NOTE"
		for l in "${FAILURES[@]}"; do echo "- FAILED: $l"; done
		print_filters
	} >"$md"
	log "wrote $md"
fi
((${#FAILURES[@]} == 0)) || die "${#FAILURES[@]} run(s) failed their checks"
