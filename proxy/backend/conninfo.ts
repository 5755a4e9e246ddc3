/**
 * libpq connection strings (primary_conninfo): keyword=value pairs, values optionally single-quoted
 * with \\ and \' escapes, or a postgresql:// URI. Only host and port are rewritten when a standby is
 * pointed at a new primary: user, password, application_name (synchronous_standby_names!) stay.
 */
export function parseConninfo(text: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  let i = 0;
  const n = text.length;
  const skip = () => {
    while (i < n && /\s/.test(text[i])) i++;
  };
  for (;;) {
    skip();
    if (i >= n) return out;
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new Error(`conninfo: missing "=" after "${text.slice(i)}"`);
    const key = text.slice(i, eq).trim();
    i = eq + 1;
    skip();
    let value = '';
    if (text[i] === "'") {
      i++;
      for (;;) {
        if (i >= n) throw new Error('conninfo: unterminated quoted string');
        const c = text[i++];
        if (c === '\\' && i < n) value += text[i++];
        else if (c === "'") break;
        else value += c;
      }
    } else {
      while (i < n && !/\s/.test(text[i])) {
        if (text[i] === '\\' && i + 1 < n) i++;
        value += text[i++];
      }
    }
    out.push([key, value]);
  }
}

const quote = (v: string): string => `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;

export function formatConninfo(pairs: Array<[string, string]>): string {
  return pairs.map(([k, v]) => `${k}=${quote(v)}`).join(' ');
}

/** the same connection string aimed at another host and port */
export function retarget(conninfo: string, host: string, port: number): string {
  if (/^postgres(ql)?:\/\//.test(conninfo)) {
    const u = new URL(conninfo);
    u.hostname = host.includes(':') ? `[${host}]` : host;
    u.port = String(port);
    return u.toString();
  }
  const pairs = parseConninfo(conninfo).filter(([k]) => k !== 'host' && k !== 'hostaddr' && k !== 'port');
  return formatConninfo([['host', host], ['port', String(port)], ...pairs]);
}
