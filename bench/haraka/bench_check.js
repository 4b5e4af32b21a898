// bench_check: a local plugin of bench/content.sh. Listed after the
// content plugins (dkim, uribl, clamd), it writes one notice line per
// message with what each of them found:
//
//   [bench_check] dkim=pass:example.net uribl=pass:body clamd=pass:clean spf=Pass verdict=ALL-RAN
//
// so the script can show that every timed message was DKIM-verified,
// had its links looked up and was scanned, and not just accepted
// (their own lines are at info level, which the benchmark does not log).
// uribl=skip:body means uribl ran but found no link: haraka-plugin-uribl
// 2.0.0 stops at the empty top-level body of a multipart message and
// never reads its parts, so only single-part messages get their links
// looked up. A message some plugin did not run on, or failed, gets
// verdict=INCOMPLETE.
exports.register = function () {
  this.register_hook('data_post', 'check')
}

// first: the first value of a result list, or '-'.
const first = (list) => (Array.isArray(list) && list.length ? String(list[0]) : '-')

exports.check = function (next, connection) {
  const txn = connection?.transaction
  if (!txn) return next()
  const get = (name) => txn.results.get(name) || {}
  const dkim = get('dkim')
  const uribl = get('uribl')
  const clamd = get('clamd')
  const spf = get('spf')

  const parts = {
    dkim: dkim.fail?.length ? `fail:${first(dkim.fail)}` : dkim.pass?.length ? `pass:${first(dkim.pass)}` : 'none',
    uribl: uribl.fail?.length
      ? `fail:${first(uribl.fail)}`
      : uribl.pass?.includes('body')
        ? 'pass:body'
        : uribl.skip?.includes('body')
          ? 'skip:body'
          : 'none',
    clamd: clamd.fail?.length ? `fail:${first(clamd.fail)}` : clamd.pass?.length ? `pass:${first(clamd.pass)}` : 'none',
    spf: spf.result || 'none',
  }
  const ok =
    parts.dkim.startsWith('pass:') &&
    (parts.uribl === 'pass:body' || parts.uribl === 'skip:body') &&
    parts.clamd === 'pass:clean' &&
    parts.spf === 'Pass'
  const line = Object.entries(parts)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ')
  connection.lognotice(this, `${line} verdict=${ok ? 'ALL-RAN' : 'INCOMPLETE'}`)
  next()
}
