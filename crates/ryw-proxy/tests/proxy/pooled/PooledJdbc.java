// pgjdbc with server-side prepared statements through ryw proxy in
// transaction pooling mode: CLIENTS connections at once on a pool of two
// server connections per node; prepareThreshold=1, so every
// PreparedStatement is a named server statement from its first execution
// (pgjdbc's default is from the fifth), run on server connections other
// clients used last.
//
//   java PooledJdbc HOST PORT EXECUTIONS
//
// Prints one JSON line: executions, errors, stale reads (judged by the
// values written), and the server processes the leader statement ran in.
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;

public class PooledJdbc {
    static final int CLIENTS = 4;

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/ryw?user=postgres&prepareThreshold=1";
        int per = Integer.parseInt(args[2]) / (4 * CLIENTS) + 1;
        List<String> errors = Collections.synchronizedList(new ArrayList<>());
        List<String> stale = Collections.synchronizedList(new ArrayList<>());
        Set<Integer> pids = ConcurrentHashMap.newKeySet();
        int[] executions = new int[CLIENTS];
        ExecutorService pool = Executors.newFixedThreadPool(CLIENTS);
        List<Future<?>> done = new ArrayList<>();
        for (int n = 0; n < CLIENTS; n++) {
            final int me = n;
            done.add(pool.submit(() -> {
                String row = "jdbc-pool-" + me;
                try (Connection c = DriverManager.getConnection(url);
                     PreparedStatement upsert = c.prepareStatement(
                         "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v");
                     PreparedStatement select = c.prepareStatement(
                         "SELECT coalesce((SELECT v FROM kv WHERE k = ?), 0), inet_server_port()");
                     PreparedStatement pid = c.prepareStatement("SELECT pg_backend_pid() + ? * 0");
                     PreparedStatement plus = c.prepareStatement("SELECT ?::int + 1")) {
                    for (int i = 1; i <= per; i++) {
                        try {
                            upsert.setString(1, row);
                            upsert.setLong(2, i);
                            upsert.executeUpdate();
                            select.setString(1, row);
                            long v;
                            try (ResultSet r = select.executeQuery()) { r.next(); v = r.getLong(1); }
                            pid.setInt(1, i);
                            try (ResultSet r = pid.executeQuery()) { r.next(); pids.add(r.getInt(1)); }
                            c.setAutoCommit(false);
                            plus.setInt(1, i);
                            try (ResultSet r = plus.executeQuery()) { r.next(); }
                            c.commit();
                            c.setAutoCommit(true);
                            executions[me] += 4;
                            if (v < i) stale.add(row + ": wrote " + i + ", read " + v);
                        } catch (SQLException e) {
                            String m = row + " #" + i + ": " + e.getMessage();
                            errors.add(m.length() > 300 ? m.substring(0, 300) : m);
                            try { c.rollback(); c.setAutoCommit(true); } catch (SQLException ignored) { }
                        }
                    }
                } catch (SQLException e) {
                    errors.add(row + ": " + e.getMessage());
                }
            }));
        }
        for (Future<?> f : done) f.get();
        pool.shutdown();
        int total = Arrays.stream(executions).sum();
        System.out.println("{\"executions\": " + total
            + ", \"errors\": " + json(errors) + ", \"stale\": " + json(stale)
            + ", \"server_connections\": " + pids.size() + "}");
    }

    static String json(List<String> list) {
        StringBuilder b = new StringBuilder("[");
        for (String s : list.subList(0, Math.min(10, list.size()))) {
            if (b.length() > 1) b.append(", ");
            b.append('"').append(s.replace("\\", "\\\\").replace("\"", "\\\"")).append('"');
        }
        return b.append(']').toString();
    }
}
