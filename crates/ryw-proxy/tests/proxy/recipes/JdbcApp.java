import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.postgresql.PGConnection;

/**
 * A JDBC app on HikariCP (3 connections) through ryw proxy, its requests served by request
 * threads as a servlet container serves them, running pooled.py's workload: a user writes a
 * value through one request and reads it back through the next, thinking THINK_MS between
 * pairs; the write's request answers the user, then finishes its own work before it gives its
 * connection back, and the read arrives meanwhile, so the pool hands it another connection.
 *
 * <p>{@code java JdbcApp HOST PORT bound|control PAIRS THINK_MS}
 *
 * <p>{@code bound}: the recipe (recipes/jdbc/RywDataSource.java), with {@code SESSION} set around
 * each of the user's requests as a servlet filter would; {@code control}: a plain
 * HikariDataSource. Judged as pooled.py judges; prints one JSON line.
 */
public class JdbcApp {
    static final String UPSERT =
            "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v";
    static final String SELECT =
            "SELECT coalesce((SELECT v FROM kv WHERE k = ?), 0), inet_server_port()";

    interface Handler<T> {
        T handle(Connection c) throws Exception;
    }

    final HikariDataSource pool;
    final boolean bound;
    final ExecutorService server = Executors.newFixedThreadPool(3);

    JdbcApp(HikariDataSource pool, boolean bound) {
        this.pool = pool;
        this.bound = bound;
    }

    /** A request on a server thread, with a connection from the pool; user null: anonymous. */
    <T> Future<T> request(String user, Handler<T> handler) {
        return server.submit(() -> {
            if (bound && user != null) RywDataSource.SESSION.set(user);
            try (Connection c = pool.getConnection()) {
                return handler.handle(c);
            } finally {
                RywDataSource.SESSION.remove();
            }
        });
    }

    static int pid(Connection c) throws SQLException {
        return c.unwrap(PGConnection.class).getBackendPID();
    }

    public static void main(String[] args) throws Exception {
        String host = args[0], port = args[1], mode = args[2];
        int pairs = Integer.parseInt(args[3]);
        long think = Long.parseLong(args[4]);
        if (!mode.equals("bound") && !mode.equals("control")) throw new IllegalArgumentException(mode);
        HikariConfig config = new HikariConfig();
        config.setJdbcUrl("jdbc:postgresql://" + host + ":" + port + "/ryw");
        config.setUsername("postgres");
        config.setMaximumPoolSize(3);
        config.setMinimumIdle(3);
        boolean bound = mode.equals("bound");
        JdbcApp app = new JdbcApp(bound ? new RywDataSource(config) : new HikariDataSource(config), bound);
        String key = "jdbc-" + mode;
        int done = 0, crossed = 0, stale = 0, staleCrossed = 0;
        Map<Integer, Integer> ports = new TreeMap<>();
        List<String> errors = new ArrayList<>();
        long started = System.nanoTime();
        for (int i = 1; i <= pairs; i++) {
            int value = i;
            CompletableFuture<Integer> answered = new CompletableFuture<>();
            CountDownLatch finish = new CountDownLatch(1);
            Future<Object> writing = null;
            try {
                writing = app.request("user-1", c -> {
                    try (PreparedStatement s = c.prepareStatement(UPSERT)) {
                        s.setString(1, key);
                        s.setLong(2, value);
                        s.executeUpdate();
                    } catch (SQLException e) {
                        answered.completeExceptionally(e);
                        throw e;
                    }
                    answered.complete(pid(c));
                    return finish.await(10, TimeUnit.SECONDS);
                });
                int wroteOn = answered.get(10, TimeUnit.SECONDS);
                long[] read = app.request("user-1", c -> {
                    try (PreparedStatement s = c.prepareStatement(SELECT)) {
                        s.setString(1, key);
                        try (ResultSet r = s.executeQuery()) {
                            r.next();
                            return new long[] {r.getLong(1), r.getInt(2), pid(c)};
                        }
                    }
                }).get();
                boolean cross = wroteOn != read[2];
                done++;
                if (cross) crossed++;
                if (read[0] < value) {
                    stale++;
                    if (cross) staleCrossed++;
                }
                ports.merge((int) read[1], 1, Integer::sum);
            } catch (Exception e) {
                String m = key + " pair " + i + ": " + e;
                errors.add(m.substring(0, Math.min(300, m.length())));
            } finally {
                finish.countDown();
                if (writing != null) {
                    try {
                        writing.get();
                    } catch (Exception e) {
                        errors.add("the write's request: " + e);
                    }
                }
            }
            Thread.sleep(think);
        }
        double seconds = (System.nanoTime() - started) / 1e9;
        // The session each kind of request runs in: the user's, and none for an anonymous one.
        Handler<String> show = c -> {
            try (ResultSet r = c.createStatement().executeQuery("SHOW ryw.session")) {
                r.next();
                return r.getString(1);
            }
        };
        String userSession = app.request("user-1", show).get();
        String anonymousSession = app.request(null, show).get();
        app.server.shutdown();
        app.pool.close();
        StringBuilder json = new StringBuilder();
        json.append("{\"pairs\":").append(done).append(",\"crossed\":").append(crossed)
                .append(",\"stale\":").append(stale).append(",\"stale_crossed\":").append(staleCrossed)
                .append(",\"seconds\":").append(seconds)
                .append(",\"sessions\":{\"user\":\"").append(userSession)
                .append("\",\"anonymous\":\"").append(anonymousSession).append("\"},\"ports\":{");
        String sep = "";
        for (Map.Entry<Integer, Integer> e : ports.entrySet()) {
            json.append(sep).append('"').append(e.getKey()).append("\":").append(e.getValue());
            sep = ",";
        }
        json.append("},\"errors\":[");
        sep = "";
        for (String e : errors) {
            json.append(sep).append('"').append(e.replace("\\", "\\\\").replace("\"", "'")).append('"');
            sep = ",";
        }
        System.out.println(json.append("]}"));
    }
}
