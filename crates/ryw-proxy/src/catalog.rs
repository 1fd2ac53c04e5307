//! Which functions a read may call on a follower: the database's own
//! catalog says. A function leaves the leader only if every function of
//! that name (in any schema, any signature) is IMMUTABLE or STABLE
//! (`pg_proc.provolatile`), or it is on a short list of harmless VOLATILE
//! built-ins (`random()`, `clock_timestamp()`, …). A name the catalog does
//! not know (created since it was read, or not a function at all) keeps the
//! read on the leader and makes the proxy read the catalog again. A
//! deny-list cannot know every function that writes, the users' own
//! included; the catalog can (the deny-list in `classify` stays as a
//! backstop, and a follower still refuses a write with 25006).
//!
//! Relations the same way: a read of a sequence stays on the leader (a
//! standby has the sequence's last logged state, up to 32 values ahead of
//! the leader's), and so does a read of a relation the catalog does not
//! know yet (created since it was read).
//!
//! One catalog per database, read on the proxy's own connection (the
//! router's leader URL with the client's database) when a client of that
//! database logs in, and again at most every [`REFRESH`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a database's catalog is read again while it is used.
pub const REFRESH: Duration = Duration::from_secs(60);
/// How soon an unknown name may make the catalog be read again.
const RETRY_UNKNOWN: Duration = Duration::from_secs(1);

/// VOLATILE built-ins that change nothing and whose answer does not
/// depend on which server runs them.
const HARMLESS: &[&str] = &[
    "random",
    "random_normal",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "uuid_generate_v4",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
];

/// What SQL spells like a call but `pg_proc` does not list (or lists under
/// another name): keywords of the grammar, all read-only.
const KEYWORD_CALLS: &[&str] = &[
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "current_user",
    "current_role",
    "session_user",
    "user",
    "system_user",
    "current_catalog",
    "current_schema",
    "row",
    "array",
    "exists",
    "grouping",
    "xmlelement",
    "xmlforest",
    "xmlconcat",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmlexists",
    "json_object",
    "json_array",
    "json_objectagg",
    "json_arrayagg",
];

/// What a database's catalog says.
#[derive(Debug, Default)]
struct Names {
    /// Function name → every function of that name is non-volatile.
    functions: HashMap<Box<str>, bool>,
    /// Relation name → some relation of that name is a sequence.
    relations: HashMap<Box<str>, bool>,
}

/// One database's verdicts.
#[derive(Debug, Default)]
struct Db {
    safe: Arc<Names>,
    loaded_at: Option<Instant>,
    loading: bool,
    /// When a read last asked for a name the catalog did not know.
    asked_again: Option<Instant>,
}

/// The catalogs, by database.
#[derive(Debug)]
pub struct Catalog {
    /// The router's leader URL: the proxy's own credentials.
    url: String,
    dbs: Arc<Mutex<HashMap<Arc<str>, Db>>>,
}

impl Catalog {
    /// Catalogs read with the credentials of `url` (the leader's).
    pub fn new(url: String) -> Catalog {
        Catalog {
            url,
            dbs: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Reads `database`'s catalog now and waits for it (at most `limit`).
    pub async fn load(&self, database: &str, limit: Duration) {
        let Some(task) = self.start(database, true) else {
            return;
        };
        let _ = tokio::time::timeout(limit, task).await;
    }

    /// A client of `database` logged in: its catalog is read if it is not
    /// known or is old.
    pub fn wanted(&self, database: &str) {
        self.start(database, false);
    }

    /// Whether a read may call `name` (as PostgreSQL looks it up) on a
    /// follower.
    pub fn safe(&self, database: &str, name: &str) -> bool {
        if HARMLESS.contains(&name) || KEYWORD_CALLS.contains(&name) {
            return true;
        }
        self.verdict(database, |n| n.functions.get(name).copied())
    }

    /// Whether a read may read relation `name` on a follower: one the
    /// catalog knows, and not a sequence.
    pub fn safe_relation(&self, database: &str, name: &str) -> bool {
        self.verdict(database, |n| n.relations.get(name).map(|seq| !seq))
    }

    /// The catalog's verdict; when it has none, `false`, and the catalog
    /// read again soon.
    fn verdict(&self, database: &str, of: impl Fn(&Names) -> Option<bool>) -> bool {
        let verdict = {
            let dbs = self.dbs.lock().unwrap_or_else(|p| p.into_inner());
            dbs.get(database).map(|db| of(&db.safe))
        };
        match verdict {
            Some(Some(safe)) => safe,
            // Not known (yet): the leader, and the catalog read again soon.
            _ => {
                let again = {
                    let mut dbs = self.dbs.lock().unwrap_or_else(|p| p.into_inner());
                    let db = dbs.entry(Arc::from(database)).or_default();
                    let due = db.asked_again.is_none_or(|t| t.elapsed() > RETRY_UNKNOWN);
                    if due {
                        db.asked_again = Some(Instant::now());
                    }
                    due
                };
                if again {
                    self.start(database, true);
                }
                false
            }
        }
    }

    /// Starts reading `database`'s catalog unless a read is under way or a
    /// recent one is known (`force`: read it whatever its age).
    fn start(&self, database: &str, force: bool) -> Option<tokio::task::JoinHandle<()>> {
        {
            let mut dbs = self.dbs.lock().unwrap_or_else(|p| p.into_inner());
            let db = dbs.entry(Arc::from(database)).or_default();
            let fresh = db.loaded_at.is_some_and(|t| t.elapsed() < REFRESH);
            if db.loading || (fresh && !force) {
                return None;
            }
            db.loading = true;
        }
        let dbs = self.dbs.clone();
        let url = self.url.clone();
        let database: Arc<str> = Arc::from(database);
        Some(tokio::spawn(async move {
            let read = read_catalog(&url, &database).await;
            let mut dbs = dbs.lock().unwrap_or_else(|p| p.into_inner());
            let db = dbs.entry(database.clone()).or_default();
            db.loading = false;
            match read {
                Ok(names) => {
                    db.safe = Arc::new(names);
                    db.loaded_at = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(database = %database, error = %e, "could not read the function catalog; reads that call functions stay on the leader");
                }
            }
        }))
    }
}

/// Two statements: every function name and whether all of its kind are
/// non-volatile; every relation name and whether one of them is a sequence.
async fn read_catalog(url: &str, database: &str) -> Result<Names, String> {
    let (mut cfg, tls) = ryw_router::tls::parse_node_url(url).map_err(|e| format!("{e}"))?;
    cfg.dbname(database);
    cfg.application_name("ryw-proxy-catalog");
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(2));
    }
    let (client, conn) = cfg
        .connect(tls.make_connect())
        .await
        .map_err(|e| format!("{e}"))?;
    let task = tokio::spawn(conn);
    let read = async {
        let functions = client
            .query(
                "SELECT proname::text, bool_and(provolatile <> 'v') \
                 FROM pg_catalog.pg_proc GROUP BY proname",
                &[],
            )
            .await?;
        let relations = client
            .query(
                "SELECT relname::text, bool_or(relkind = 'S') FROM pg_catalog.pg_class \
                 WHERE relkind IN ('r', 'v', 'm', 'S', 'f', 'p') GROUP BY relname",
                &[],
            )
            .await?;
        Ok::<_, tokio_postgres::Error>((functions, relations))
    }
    .await
    .map_err(|e| format!("{e}"));
    drop(client);
    let _ = task.await;
    let (functions, relations) = read?;
    let pairs = |rows: Vec<tokio_postgres::Row>| {
        rows.iter()
            .map(|r| (r.get::<_, String>(0).into_boxed_str(), r.get::<_, bool>(1)))
            .collect()
    };
    Ok(Names {
        functions: pairs(functions),
        relations: pairs(relations),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harmless_and_keyword_calls_need_no_catalog() {
        for name in ["random", "coalesce", "current_timestamp", "greatest"] {
            assert!(HARMLESS.contains(&name) || KEYWORD_CALLS.contains(&name));
        }
        assert!(!HARMLESS.contains(&"nextval"));
    }
}
