// node-postgres named statements through ryw proxy in transaction pooling
// mode: CLIENTS connections at once on a pool of two server connections per
// node, each running named queries ({name, text, values}: prepared on the
// server once per connection as node-postgres sees it, then Bind/Execute
// only), so each client's statements run on server connections other
// clients used last.
//
//   node pooled_node.js HOST PORT EXECUTIONS
//
// Prints one JSON line: executions, errors, stale reads (judged by the
// values written), and the server processes the leader statement ran in.
const pg = require('pg');

const [host, port, executions] = process.argv.slice(2);
const CLIENTS = 4;
const per = Math.floor(Number(executions) / (4 * CLIENTS)) + 1;
const out = { executions: 0, errors: [], stale: [], pids: new Set() };

async function client(n) {
  const c = new pg.Client({ host, port: Number(port), user: 'postgres', database: 'ryw' });
  await c.connect();
  const row = `node-pool-${n}`;
  for (let i = 1; i <= per; i++) {
    try {
      await c.query({
        name: 'upsert',
        text: 'INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v',
        values: [row, i],
      });
      const r = await c.query({
        name: 'select',
        text: 'SELECT coalesce((SELECT v FROM kv WHERE k = $1), 0)::int8 AS v, inet_server_port() AS port',
        values: [row],
      });
      // pg_backend_pid() is node-local: the proxy runs it on the leader.
      const p = await c.query({ name: 'pid', text: 'SELECT pg_backend_pid() + $1::int * 0 AS pid', values: [i] });
      await c.query('BEGIN');
      await c.query({ name: 'plus', text: 'SELECT $1::int + 1 AS x', values: [i] });
      await c.query('COMMIT');
      out.executions += 4;
      out.pids.add(p.rows[0].pid);
      if (Number(r.rows[0].v) < i) out.stale.push(`${row}: wrote ${i}, read ${r.rows[0].v}`);
    } catch (e) {
      out.errors.push(`${row} #${i}: ${e.message}`.slice(0, 300));
      try { await c.query('ROLLBACK'); } catch (_) { /* the connection is gone */ }
    }
  }
  await c.end();
}

Promise.all([...Array(CLIENTS).keys()].map(client)).then(() => {
  console.log(JSON.stringify({
    executions: out.executions,
    errors: out.errors.slice(0, 10),
    stale: out.stale.slice(0, 10),
    server_connections: out.pids.size,
  }));
}, (e) => {
  console.error(e);
  process.exit(1);
});
