// A node-postgres app on its pg.Pool (3 clients) through ryw proxy, running
// pooled.py's workload: a user writes a value through one request and reads
// it back through the next, thinking THINK_MS between pairs; the write's
// request answers the user, then finishes its own work before it gives its
// client back, and the read arrives meanwhile, so the pool hands it another
// client.
//
//   node node_app.js HOST PORT bound|control PAIRS THINK_MS
//
// `bound` uses the recipe (recipes/node-postgres/ryw-pool.js: RywPool, and
// rywSession.run around each of the user's requests as an Express
// middleware would); `control` a plain pg.Pool. Judged as pooled.py judges;
// prints one JSON line.
const pg = require('pg');
const { RywPool, rywSession } = require(process.env.RYW_RECIPE);

const [host, port, mode, pairs, think] = process.argv.slice(2);
if (!['bound', 'control'].includes(mode)) throw new Error(`mode ${mode}`);
const config = { host, port: Number(port), user: 'postgres', database: 'ryw', max: 3 };
const pool = mode === 'bound' ? new RywPool(config) : new pg.Pool(config);
const UPSERT = 'INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v';
const SELECT = 'SELECT coalesce((SELECT v FROM kv WHERE k = $1), 0)::int8 AS v, inet_server_port() AS port';
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A request of the user; an anonymous visitor's runs outside rywSession.
const asUser = (handler) => (mode === 'bound' ? rywSession.run('user-1', handler) : handler());

// The write's request: `answer(pid)` once the user has its answer; the
// client goes back to the pool when `finished` resolves.
const write = (key, value, answer, finished) =>
  asUser(async () => {
    const client = await pool.connect();
    try {
      await client.query(UPSERT, [key, value]);
      answer(client.processID);
      await finished;
    } finally {
      client.release();
    }
  });

const read = (key) =>
  asUser(async () => {
    const client = await pool.connect();
    try {
      const { rows } = await client.query(SELECT, [key]);
      return [Number(rows[0].v), rows[0].port, client.processID];
    } finally {
      client.release();
    }
  });

async function main() {
  const out = { pairs: 0, crossed: 0, stale: 0, stale_crossed: 0, ports: {}, errors: [] };
  const key = `node-${mode}`;
  const started = process.hrtime.bigint();
  for (let i = 1; i <= Number(pairs); i++) {
    let finish;
    const finished = new Promise((resolve) => (finish = resolve));
    let request;
    try {
      const wroteOn = await new Promise((answer, failed) => {
        request = write(key, i, answer, finished);
        request.catch(failed);
      });
      const [value, server, readOn] = await read(key);
      const crossed = wroteOn !== readOn;
      out.pairs++;
      out.crossed += crossed;
      if (value < i) {
        out.stale++;
        out.stale_crossed += crossed;
      }
      out.ports[server] = (out.ports[server] || 0) + 1;
    } catch (e) {
      out.errors.push(`${key} pair ${i}: ${e}`.slice(0, 300));
    } finally {
      finish();
      await request?.catch(() => {});
    }
    await sleep(Number(think));
  }
  out.seconds = Number(process.hrtime.bigint() - started) / 1e9;
  // The session each kind of request runs in (pool.query hands out clients
  // through the same connect()): the user's, and none for an anonymous one.
  const show = async () => (await pool.query('SHOW ryw.session')).rows[0]['ryw.session'];
  out.sessions = { user: await asUser(show), anonymous: await show() };
  await pool.end();
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
