import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.SQLException;

/**
 * JDBC (HikariCP, Spring's default pool): every connection the pool hands out is bound to the
 * ryw session of the request this thread serves, so a read sees that user's writes whichever
 * pooled connection made them. Set {@code SESSION} per request (a servlet filter, a Spring
 * {@code HandlerInterceptor}) and clear it after; declare this class as the app's DataSource.
 */
public class RywDataSource extends HikariDataSource {
    public static final ThreadLocal<String> SESSION = new ThreadLocal<>();

    public RywDataSource(HikariConfig config) {
        super(config);
    }

    @Override
    public Connection getConnection() throws SQLException {
        Connection connection = super.getConnection();
        String session = SESSION.get();
        try (PreparedStatement bind = connection.prepareStatement(session == null
                ? "RESET ryw.session" : "SELECT set_config('ryw.session', ?, false)")) {
            if (session != null) bind.setString(1, session);
            bind.execute();
        } catch (SQLException e) {
            connection.close();
            throw e;
        }
        return connection;
    }
}
