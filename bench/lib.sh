# Shared helpers for bench/load.sh, bench/idle.sh, bench/envelope.sh and
# bench/content.sh
# (sourced, not run). Everything listens on 127.0.0.1; every process
# started here is recorded and killed by bench_cleanup (an EXIT trap).

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
SMTP_SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
SMTP_SINK=${SMTP_SINK:-/usr/sbin/smtp-sink}

BG_PIDS=()     # background processes to kill on exit
PF_DIRS=()     # private postfix instances to stop on exit
BENCH_TMP=""
WATCHDOG_PID=""

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
now() { date +%s.%N; }
# elapsed T0 T1 -> seconds with 3 decimals
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# rate COUNT SECONDS -> msgs/s
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "-" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "" && a != "-" && b != "-" && b > 0) printf "%.2f", a / b; else print "-" }'; }

# bench_init NAME MAX_SECONDS: temp dir, traps, and a watchdog that
# terminates the whole script after MAX_SECONDS whatever happens.
bench_init() {
	local name=$1 max=$2
	BENCH_TMP=$(mktemp -d "/tmp/mailgate-$name.XXXXXX")
	chmod 755 "$BENCH_TMP"
	trap bench_cleanup EXIT
	trap 'log "interrupted"; exit 130' INT TERM HUP
	(sleep "$max" && log "watchdog: $name exceeded ${max}s, aborting" && kill -TERM $$) &
	WATCHDOG_PID=$!
	mkdir -p "$BENCH_TMP/bin"
}

bench_cleanup() {
	local rc=$? pid dir i
	trap - EXIT INT TERM HUP
	set +e
	for dir in "${PF_DIRS[@]}"; do
		if [[ -x $BENCH_TMP/bin/pfinstance ]]; then
			timeout 30 "$BENCH_TMP/bin/pfinstance" stop -dir "$dir" >/dev/null 2>&1
		else
			timeout 30 postfix -c "$dir/etc" abort >/dev/null 2>&1
		fi
	done
	for pid in "${BG_PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for i in $(seq 50); do
		local alive=0
		for pid in "${BG_PIDS[@]}"; do
			kill -0 "$pid" 2>/dev/null && alive=1
		done
		((alive)) || break
		sleep 0.1
	done
	for pid in "${BG_PIDS[@]}"; do
		kill -KILL "$pid" 2>/dev/null
	done
	if [[ -n $WATCHDOG_PID ]]; then
		# the watchdog subshell and its sleep child
		kill $(ps -o pid= --ppid "$WATCHDOG_PID" 2>/dev/null) "$WATCHDOG_PID" 2>/dev/null
	fi
	if [[ -n $BENCH_TMP && -d $BENCH_TMP ]]; then
		if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then
			log "kept $BENCH_TMP"
		else
			rm -rf "$BENCH_TMP"
		fi
	fi
	exit "$rc"
}

raise_nofile() {
	local want=${1:-65536}
	ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
	log "open files limit: $(ulimit -n)"
}

# free_port: a TCP port that is free on 127.0.0.1 right now.
free_port() {
	local p
	if p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' 2>/dev/null); then
		echo "$p"
		return
	fi
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 20000))
		if ! ss -Hltn "sport = :$p" | grep -q .; then
			echo "$p"
			return
		fi
	done
	die "no free port found"
}

# wait_banner PORT TIMEOUT_S: wait until 127.0.0.1:PORT sends "220".
wait_banner() {
	local port=$1 timeout=$2 deadline
	deadline=$(($(date +%s) + timeout))
	while (($(date +%s) < deadline)); do
		if timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && IFS= read -r line <&3 && [[ \$line == 220* ]] && printf 'QUIT\r\n' >&3" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
pss_kb() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

# start_sink PORT OUTFILE [MAXCONN]: smtp-sink with running counters (-c)
# in OUTFILE; sets SINK_PID. No dumps, no delays: as fast as it goes.
start_sink() {
	local port=$1 out=$2 maxconn=${3:-1024} user=()
	[[ $(id -u) == 0 ]] && user=(-u nobody)
	"$SMTP_SINK" -c "${user[@]}" -m "$maxconn" -t 60 "127.0.0.1:$port" 4096 >"$out" 2>"$out.err" &
	SINK_PID=$!
	BG_PIDS+=("$SINK_PID")
	wait_banner "$port" 10 || die "smtp-sink did not start on 127.0.0.1:$port: $(cat "$out.err")"
}

# sink_count OUTFILE: messages (".") smtp-sink has received so far.
sink_count() {
	local n
	n=$(tail -c 256 "$1" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -n 1 | cut -d= -f2)
	echo "${n:-0}"
}

# wait_sink_count OUTFILE TARGET TIMEOUT_S: wait until the sink has
# counted TARGET messages; prints the time it was reached (now()).
wait_sink_count() {
	local out=$1 target=$2 timeout=$3 deadline
	deadline=$(($(date +%s) + timeout))
	while :; do
		if (($(sink_count "$out") >= target)); then
			now
			return 0
		fi
		(($(date +%s) >= deadline)) && return 1
		sleep 0.1
	done
}

# build_go_tool NAME: go build ./bench/NAME into $BENCH_TMP/bin/NAME.
build_go_tool() {
	local name=$1
	[[ -x $BENCH_TMP/bin/$name ]] && return 0
	command -v go >/dev/null || { log "go not found: cannot build bench/$name"; return 1; }
	(cd "$REPO_DIR" && timeout 300 go build -o "$BENCH_TMP/bin/$name" "./bench/$name") ||
		{ log "go build ./bench/$name failed"; return 1; }
}

# start_postfix_relay PORT RELAY_PORT [main.cf name=value...]: private
# Postfix relaying everything to 127.0.0.1:RELAY_PORT; sets PF_DIR,
# PF_PID, PF_LOG.
start_postfix_relay() {
	local port=$1 relay=$2 kv args=()
	shift 2
	for kv in "$@"; do args+=(-o "$kv"); done
	PF_DIR=$BENCH_TMP/postfix-$port
	PF_DIRS+=("$PF_DIR")
	local out
	out=$(timeout 120 "$BENCH_TMP/bin/pfinstance" start -dir "$PF_DIR" -port "$port" -relay "127.0.0.1:$relay" "${args[@]}") ||
		{ log "postfix did not start"; return 1; }
	PF_PID=$(sed -n 's/^PID=//p' <<<"$out")
	PF_LOG=$(sed -n 's/^LOG=//p' <<<"$out")
	log "postfix (master $PF_PID) on 127.0.0.1:$port relaying to 127.0.0.1:$relay, config $PF_DIR/etc"
}

postfix_queue_size() { timeout 30 postqueue -c "$1/etc" -j 2>/dev/null | grep -c . || true; }

# find_gateway: sets GW_BIN to GATEWAY_BIN, or builds ./cmd/gateway;
# returns 1 (with a message) when there is no gateway to test.
find_gateway() {
	if [[ -n ${GATEWAY_BIN:-} ]]; then
		[[ -x $GATEWAY_BIN ]] || { log "GATEWAY_BIN=$GATEWAY_BIN is not executable"; return 1; }
		GW_BIN=$GATEWAY_BIN
		return 0
	fi
	if [[ ! -d $REPO_DIR/cmd/gateway ]]; then
		log "SKIP gateway: no ./cmd/gateway in $REPO_DIR and GATEWAY_BIN not set"
		return 1
	fi
	if ! (cd "$REPO_DIR" && timeout 300 go build -o "$BENCH_TMP/bin/mailgate" ./cmd/gateway) >"$BENCH_TMP/gateway-build.log" 2>&1; then
		log "SKIP gateway: go build ./cmd/gateway failed:"
		sed 's/^/    /' "$BENCH_TMP/gateway-build.log" | head -20 >&2
		return 1
	fi
	GW_BIN=$BENCH_TMP/bin/mailgate
}

# Gateway limits and state for the benchmarks. Every connection comes from
# the one loopback client, so the per-address limits (20 concurrent, 60
# new connections a minute by default) are lifted; the connection rate
# counters then go to GATEWAY_STATE. GATEWAY_LIMITS replaces the limits map.
BENCH_GATEWAY_LIMITS="max_connections: 100000, max_connections_per_ip: 100000, connection_rate_per_ip: 1000000/1s"
GATEWAY_STATE=${GATEWAY_STATE:-memory:}
GATEWAY_LOG_LEVEL=${GATEWAY_LOG_LEVEL:-warn}

# write_gateway_config FILE GW_PORT SINK_PORT WITH_LIMITS(0|1) [YAML]:
# WITH_LIMITS adds the limits and state lines; YAML is more top-level
# config (dns:, filters:), one or more lines.
write_gateway_config() {
	local file=$1 gw=$2 sink=$3 limits=$4 extra=${5:-}
	{
		echo "hostname: mx.bench.test"
		echo "domains: [example.com]"
		echo "listeners:"
		echo "  - {name: mx, address: 127.0.0.1:$gw, tls: none, auth: off}"
		echo "upstream:"
		echo "  servers: [{address: 127.0.0.1:$sink, tls: none}]"
		if ((limits)); then
			echo "limits: {${GATEWAY_LIMITS:-$BENCH_GATEWAY_LIMITS}}"
			echo "state: {store: \"$GATEWAY_STATE\"}"
		fi
		[[ -n $extra ]] && printf '%s\n' "$extra"
		echo "log: {format: json, level: $GATEWAY_LOG_LEVEL}"
	} >"$file"
	chmod 600 "$file"
}

# start_gateway GW_PORT SINK_PORT [YAML]: validate a config (dropping the
# limits and state lines if the gateway does not know them), start the
# gateway, wait for its banner; sets GW_PID, GW_CONF, GW_LOG.
start_gateway() {
	local gw=$1 sink=$2 extra=${3:-} out
	GW_CONF=$BENCH_TMP/gateway-$gw.yaml
	GW_LOG=$BENCH_TMP/gateway-$gw.log
	write_gateway_config "$GW_CONF" "$gw" "$sink" 1 "$extra"
	if ! out=$(timeout 30 "$GW_BIN" check --config "$GW_CONF" 2>&1); then
		if [[ -z ${GATEWAY_LIMITS:-} && -z $extra ]] && grep -qiE 'limits|state' <<<"$out"; then
			log "gateway rejects the limits or state line ($(grep -iE "limits|state" <<<"$out" | head -1)); retrying without them"
			write_gateway_config "$GW_CONF" "$gw" "$sink" 0
			out=$(timeout 30 "$GW_BIN" check --config "$GW_CONF" 2>&1) ||
				{ log "gateway config check failed: $out"; return 1; }
		else
			log "gateway config check failed: $out"
			return 1
		fi
	fi
	"$GW_BIN" run --config "$GW_CONF" >"$GW_LOG" 2>&1 &
	GW_PID=$!
	BG_PIDS+=("$GW_PID")
	if ! wait_banner "$gw" 20; then
		log "gateway did not answer on 127.0.0.1:$gw; its log:"
		tail -20 "$GW_LOG" >&2
		return 1
	fi
	log "gateway (pid $GW_PID) on 127.0.0.1:$gw relaying to 127.0.0.1:$sink"
}

# source_run PORT SESSIONS COUNT LOGFILE: run smtp-source with SRC_FLAGS,
# bounded by RUN_TIMEOUT; prints "T0 T1" and returns its status.
source_run() {
	local port=$1 s=$2 m=$3 logf=$4 t0 t1 rc=0
	t0=$(now)
	timeout "$RUN_TIMEOUT" "$SMTP_SOURCE" "${SRC_FLAGS[@]}" -s "$s" -m "$m" "127.0.0.1:$port" >"$logf" 2>&1 || rc=$?
	t1=$(now)
	echo "$t0 $t1"
	return $rc
}

# median of the arguments ("-" entries ignored; "-" if none).
median() {
	printf '%s\n' "$@" | awk '$1 != "-"' | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# spread of the arguments as "runs MIN-MAXs" (empty for one value).
spread() {
	printf '%s\n' "$@" | awk '$1 != "-"' | sort -g | awk '{ v[NR] = $1 } END { if (NR > 1) printf "runs %s-%ss", v[1], v[NR] }'
}

stop_pid() {
	local pid=$1
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

# cpu_ticks PID...: user+system CPU the processes have used, in clock ticks.
cpu_ticks() {
	local pid t=0 f
	for pid in "$@"; do
		f=$(cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null) || continue
		t=$((t + ${f% *} + ${f#* }))
	done
	echo "$t"
}

# per COUNT VALUES...: median of VALUES divided by COUNT, 2 decimals.
per() {
	local m=$1
	shift
	awk -v v="$(median "$@")" -v m="$m" 'BEGIN { if (v == "-") print "-"; else printf "%.2f", v / m }'
}

# ticks_ms COUNT TICKS...: median CPU ticks as ms per message.
ticks_ms() {
	local m=$1
	shift
	awk -v t="$(median "$@")" -v m="$m" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (t == "-") print "-"; else printf "%.2f", t * 1000 / hz / m }'
}

# ms_per_msg SESSIONS SECONDS COUNT: latency, what one message costs one
# session (sessions x seconds / messages), in ms.
ms_per_msg() { awk -v s="$1" -v t="$2" -v m="$3" 'BEGIN { if (t == "-") print "-"; else printf "%.2f", s * t * 1000 / m }'; }

# ms_diff A B: A - B, 2 decimals
ms_diff() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-") print "-"; else printf "%+.2f", a - b }'; }

# md_table HEADER ALIGN ROW...: a Markdown table; HEADER, ALIGN and each
# ROW are cells joined by "|".
md_table() {
	local r
	echo "| ${1//|/ | } |"
	echo "|${2}|"
	shift 2
	for r in "$@"; do echo "| ${r//|/ | } |"; done
}

# start_dnsserver: bench/dnsserver (build_go_tool it first) serving
# bench/dnsserver/bench.zone on 127.0.0.1, UDP and TCP; sets DNS_PORT,
# DNS_OUT (its query counts, see dns_queries) and DNS_PID.
start_dnsserver() {
	DNS_PORT=$(free_port)
	DNS_OUT=$BENCH_TMP/dns.out
	"$BENCH_TMP/bin/dnsserver" -zone "$BENCH_DIR/dnsserver/bench.zone" -addr "127.0.0.1:$DNS_PORT" >"$DNS_OUT" 2>"$BENCH_TMP/dns.err" &
	DNS_PID=$!
	BG_PIDS+=("$DNS_PID")
	for _ in $(seq 100); do grep -q serving "$BENCH_TMP/dns.err" && break; sleep 0.1; done
	grep -q serving "$BENCH_TMP/dns.err" || die "dnsserver did not start: $(cat "$BENCH_TMP/dns.err")"
	log "dnsserver (pid $DNS_PID) on 127.0.0.1:$DNS_PORT (udp, tcp)"
}

# dns_queries: the queries dnsserver has answered so far (it prints the
# count on SIGUSR1).
dns_queries() {
	local n
	n=$(grep -c '^queries' "$DNS_OUT" || true)
	kill -USR1 "$DNS_PID"
	for _ in $(seq 50); do
		(($(grep -c '^queries' "$DNS_OUT" || true) > n)) && break
		sleep 0.02
	done
	grep '^queries' "$DNS_OUT" | tail -n 1 | cut -d' ' -f2
}

# install_haraka "PKG@VERSION...": sets HARAKA_BIN and HARAKA_VERSIONS
# (npm install of the packages into the temp dir unless HARAKA_DIR points
# at an existing one, which must hold every one of them).
install_haraka() {
	local pkgs=$1 dir=${HARAKA_DIR:-$BENCH_TMP/haraka-npm} p missing=()
	if [[ ! -f $dir/node_modules/Haraka/bin/haraka ]]; then
		command -v npm >/dev/null || { log "npm not found"; return 1; }
		[[ -z ${HARAKA_DIR:-} ]] || { log "HARAKA_DIR=$dir has no node_modules/Haraka"; return 1; }
		log "npm install $pkgs (into $dir)"
		mkdir -p "$dir"
		echo '{"name": "mailgate-bench-haraka", "private": true}' >"$dir/package.json"
		# shellcheck disable=SC2086
		if ! (cd "$dir" && timeout 300 npm install --no-audit --no-fund --omit=optional $pkgs) >"$BENCH_TMP/npm.log" 2>&1; then
			log "npm install failed:"
			tail -20 "$BENCH_TMP/npm.log" >&2
			return 1
		fi
	fi
	for p in $pkgs; do
		[[ -f $dir/node_modules/${p%@*}/package.json ]] || missing+=("$p")
	done
	if ((${#missing[@]})); then
		log "$dir lacks ${missing[*]}: (cd $dir && npm install --omit=optional ${missing[*]})"
		return 1
	fi
	HARAKA_BIN=$dir/node_modules/Haraka/bin/haraka
	HARAKA_VERSIONS=$(for p in $pkgs; do printf '%s@%s\n' "${p%@*}" "$(node -p "require('$dir/node_modules/${p%@*}/package.json').version")"; done | paste -sd' ')
	log "Haraka in $dir: $HARAKA_VERSIONS; node $(node --version), ${HARAKA_NODES:-?} worker(s)"
}

# start_haraka SCENARIO CONFIG_FN "PKG@VERSION...": install_haraka the
# packages, create an instance, let CONFIG_FN DIR PORT write its config,
# start it and wait for its HARAKA_NODES workers and banner. Sets
# PORT[SCENARIO], PIDS[SCENARIO] (master and workers) and LOGF[SCENARIO]:
# associative arrays the caller declares.
start_haraka() {
	local scen=$1 config_fn=$2 pkgs=$3 d=$BENCH_TMP/haraka port pid w
	install_haraka "$pkgs" || return 1
	port=$(free_port)
	node "$HARAKA_BIN" -i "$d" >"$BENCH_TMP/haraka-install.log" 2>&1 || { log "haraka -i failed: $(tail -3 "$BENCH_TMP/haraka-install.log")"; return 1; }
	"$config_fn" "$d" "$port"
	node "$HARAKA_BIN" -c "$d" >"$BENCH_TMP/haraka.log" 2>&1 &
	pid=$!
	BG_PIDS+=("$pid")
	for _ in $(seq 300); do
		(($(grep -c 'worker [0-9]* listening' "$BENCH_TMP/haraka.log" || true) >= HARAKA_NODES)) && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if ! wait_banner "$port" 5; then
		log "Haraka did not answer on 127.0.0.1:$port; its log:"
		tail -20 "$BENCH_TMP/haraka.log" >&2
		return 1
	fi
	PIDS[$scen]=$pid
	for w in $(ps -o pid= --ppid "$pid"); do
		BG_PIDS+=("$w")
		PIDS[$scen]+=" $w"
	done
	PORT[$scen]=$port LOGF[$scen]=$BENCH_TMP/haraka.log
	log "Haraka (pids ${PIDS[$scen]}) on 127.0.0.1:$port relaying to 127.0.0.1:$SINK_PORT"
}

# runs SESSIONS COUNT SCENARIO...: REPEAT rounds, each calling the
# script's timed_run SCENARIO SESSIONS COUNT ROUND for every scenario in
# turn; the round's log line ends with the script's round_note, if any.
runs() {
	local s=$1 m=$2 i scen note=""
	shift 2
	for ((i = 1; i <= REPEAT; i++)); do
		declare -F round_note >/dev/null && note=" ($(round_note))"
		log "== round $i/$REPEAT: $s session(s), $m messages each$note"
		for scen in "$@"; do timed_run "$scen" "$s" "$m" "$i"; done
	done
}
