// node-postgres: a pg.Pool whose clients (pool.connect() and pool.query())
// are bound to the ryw session of the request being served, so a read sees
// that user's writes whichever pooled client made them.
//
//   const pool = new RywPool({ host, port, user, database });
//   app.use((req, res, next) => rywSession.run(`user-${req.user.id}`, next)); // Express
const { AsyncLocalStorage } = require('node:async_hooks');
const pg = require('pg');

const rywSession = new AsyncLocalStorage();

class RywPool extends pg.Pool {
  connect(callback) {
    const session = rywSession.getStore();
    const [sql, values] = session
      ? ["SELECT set_config('ryw.session', $1, false)", [session]]
      : ['RESET ryw.session', []];
    const bound = super.connect().then((client) =>
      client.query(sql, values).then(
        () => client,
        (e) => {
          client.release(e);
          throw e;
        },
      ),
    );
    if (!callback) return bound;
    bound.then((client) => callback(undefined, client, (e) => client.release(e)), callback);
  }
}

module.exports = { RywPool, rywSession };
