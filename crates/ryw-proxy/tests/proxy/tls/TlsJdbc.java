// pgjdbc through ryw proxy over TLS: sslmode=verify-full with the test CA.
// Args: port database password ca.pem. Prints one JSON line.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;

public class TlsJdbc {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/" + args[1]
                + "?user=postgres&password=" + args[2]
                + "&ssl=true&sslmode=verify-full&sslrootcert=" + args[3]
                + "&connectTimeout=5";
        try (Connection c = DriverManager.getConnection(url);
                Statement s = c.createStatement();
                ResultSet r = s.executeQuery("SELECT 41 + 1")) {
            r.next();
            System.out.println("{\"answer\": " + r.getInt(1) + "}");
        }
    }
}
