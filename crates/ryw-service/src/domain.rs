//! Parse, don't validate: the input newtypes. Bad input cannot reach the SQL
//! layer as a raw string; each parser says what is wrong in words a client
//! can act on.

use crate::error::ApiError;
use serde::Serialize;
use uuid::Uuid;

/// The default demo user when `X-Demo-UserId` is absent (as in the .NET +
/// Redis demo ryw grew from; see the README, "How it compares").
pub const DEFAULT_USER: Uuid = Uuid::from_u128(0x00000000_0000_4000_8000_000000000001);

/// A user id: the `X-Demo-UserId` header, a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct UserId(pub Uuid);

impl UserId {
    /// Parses the header value; `None` (header absent) is the demo user.
    pub fn parse(header: Option<&str>) -> Result<UserId, ApiError> {
        match header {
            None => Ok(UserId(DEFAULT_USER)),
            Some(text) => Uuid::parse_str(text.trim())
                .map(UserId)
                .map_err(|_| ApiError::BadUserId(truncate(text, 64))),
        }
    }
}

/// A payment amount in cents: an integer in `1..=100_000_000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AmountCents(i64);

impl AmountCents {
    /// Most a single payment may move (one million dollars).
    pub const MAX: i64 = 100_000_000;

    /// Parses the JSON value of `amount_cents`: strings, fractions,
    /// booleans, zero, negatives and numbers beyond the limit are refused.
    /// `100.0` is the integer 100 (JSON has one number type, and the OpenAPI
    /// document's `integer` includes it).
    pub fn parse(v: &serde_json::Value) -> Result<AmountCents, ApiError> {
        let bad = || {
            ApiError::InvalidAmount(format!(
                "amount_cents must be an integer in 1..={}, got {}",
                Self::MAX,
                short(v)
            ))
        };
        let n = whole_number(v).ok_or_else(bad)?;
        if (1..=Self::MAX).contains(&n) {
            Ok(AmountCents(n))
        } else {
            Err(bad())
        }
    }

    /// The value in cents.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// A JSON number without a fraction, as an `i64`: `7`, `7.0` and `7e0` are
/// 7; `7.5`, `"7"` and numbers beyond ±2^53 written with a fraction or an
/// exponent are not (an `f64` is exact only that far).
pub fn whole_number(v: &serde_json::Value) -> Option<i64> {
    let serde_json::Value::Number(n) = v else {
        return None;
    };
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    n.as_f64()
        .filter(|f| f.fract() == 0.0 && f.abs() <= EXACT)
        .map(|f| f as i64)
}

/// An optional payment description, at most 200 characters.
pub fn description(v: Option<&serde_json::Value>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s))
            if s.chars().count() <= 200 && !s.chars().any(char::is_control) =>
        {
            Ok(Some(s.clone()))
        }
        Some(other) => Err(ApiError::InvalidField {
            field: "description",
            detail: format!(
                "description must be a string of at most 200 printable characters, got {}",
                short(other)
            ),
        }),
    }
}

/// An `Idempotency-Key`: 1–128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses the header value.
    pub fn parse(text: &str) -> Result<IdempotencyKey, ApiError> {
        if (1..=128).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(IdempotencyKey(text.to_owned()))
        } else {
            Err(ApiError::BadIdempotencyKey)
        }
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated profile (the .NET demo's `POST /api/me/profile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// A plausible address, at most 254 characters.
    pub email: String,
    /// 1–200 characters.
    pub name: String,
    /// http(s), at most 2048 characters.
    pub avatar_url: Option<String>,
}

impl Profile {
    /// Parses `{"email","name","avatarUrl"?}`.
    pub fn parse(body: &serde_json::Value) -> Result<Profile, ApiError> {
        let field = |name: &'static str, detail: String| ApiError::InvalidField {
            field: name,
            detail,
        };
        let obj = body
            .as_object()
            .ok_or_else(|| field("body", "the body must be a JSON object".into()))?;
        let email = match obj.get("email") {
            Some(serde_json::Value::String(s)) if plausible_email(s) => s.clone(),
            other => {
                return Err(field(
                    "email",
                    format!(
                        "email must be a plausible address of at most 254 characters, got {}",
                        other.map(short).unwrap_or_else(|| "nothing".into())
                    ),
                ));
            }
        };
        let name = match obj.get("name") {
            // The limits as the OpenAPI document states them (its
            // `maxLength` counts characters of the text as sent).
            Some(serde_json::Value::String(s))
                if (1..=200).contains(&s.chars().count())
                    && !s.trim().is_empty()
                    && !s.chars().any(char::is_control) =>
            {
                s.trim().to_owned()
            }
            other => {
                return Err(field(
                    "name",
                    format!(
                        "name must be 1–200 printable characters, got {}",
                        other.map(short).unwrap_or_else(|| "nothing".into())
                    ),
                ));
            }
        };
        let avatar_url = match obj.get("avatarUrl") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if s.len() <= 2048 && http_url(s) => Some(s.clone()),
            Some(other) => {
                return Err(field(
                    "avatarUrl",
                    format!(
                        "avatarUrl must be an http(s) URL of at most 2048 characters, got {}",
                        short(other)
                    ),
                ));
            }
        };
        Ok(Profile {
            email,
            name,
            avatar_url,
        })
    }
}

/// `http(s)://host[:port][/?#rest]`, in visible ASCII: the host of letters,
/// digits, dots and dashes, the port 1–5 digits (the OpenAPI document's
/// `avatarUrl` pattern says the same).
fn http_url(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return false;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        && tail.bytes().all(|b| b.is_ascii_graphic())
}

fn plausible_email(s: &str) -> bool {
    if s.chars().count() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
}

/// A short rendering of a JSON value for error messages.
fn short(v: &serde_json::Value) -> String {
    truncate(&v.to_string(), 40)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amounts_are_integers_in_range() {
        assert_eq!(AmountCents::parse(&json!(1)).unwrap().get(), 1);
        assert_eq!(
            AmountCents::parse(&json!(100_000_000)).unwrap().get(),
            100_000_000
        );
        assert_eq!(AmountCents::parse(&json!(250.0)).unwrap().get(), 250);
        assert_eq!(
            AmountCents::parse(&serde_json::from_str("1e2").unwrap())
                .unwrap()
                .get(),
            100
        );
        for bad in [
            json!(0),
            json!(-5),
            json!(100_000_001),
            json!(1.5),
            json!(100_000_001.0),
            json!(0.0),
            json!("100"),
            json!(true),
            json!(null),
            json!(u64::MAX),
            json!(1e30),
        ] {
            assert!(AmountCents::parse(&bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn user_ids_must_be_uuids_and_default_when_absent() {
        assert_eq!(UserId::parse(None).unwrap().0, DEFAULT_USER);
        assert!(UserId::parse(Some("11111111-1111-1111-1111-111111111111")).is_ok());
        assert!(matches!(
            UserId::parse(Some("alice")),
            Err(ApiError::BadUserId(_))
        ));
        assert!(UserId::parse(Some("")).is_err());
    }

    #[test]
    fn profiles_are_validated_field_by_field() {
        let ok = Profile::parse(
            &json!({"email": "a@example.com", "name": "Akbar", "avatarUrl": "https://x.io/a.png"}),
        )
        .unwrap();
        assert_eq!(ok.name, "Akbar");
        for url in [
            "http://x",
            "https://cdn.example.com:8443/a/b.png?size=2#top",
            "https://x.io?s=1",
        ] {
            let p =
                Profile::parse(&json!({"email": "a@example.com", "name": "A", "avatarUrl": url}));
            assert_eq!(p.unwrap().avatar_url.as_deref(), Some(url));
        }
        assert!(
            Profile::parse(&json!({"email": "a@example.com", "name": "A"}))
                .unwrap()
                .avatar_url
                .is_none()
        );
        for bad in [
            json!({"email": "nope", "name": "A"}),
            json!({"email": "a@example.com", "name": ""}),
            json!({"email": "a@example.com", "name": "x".repeat(201)}),
            json!({"email": "a@example.com", "name": "A", "avatarUrl": "javascript:alert(1)"}),
            json!({"email": format!("{}@example.com", "a".repeat(250)), "name": "A"}),
            json!({"email": 5, "name": "A"}),
            json!({"email": " a@example.com", "name": "A"}),
            json!({"email": "a@example.com", "name": "   "}),
            json!({"email": "a@example.com", "name": format!("A{}", " ".repeat(200))}),
            json!({"email": "a@example.com", "name": "A", "avatarUrl": "https://"}),
            json!({"email": "a@example.com", "name": "A", "avatarUrl": "https://é.fr/a.png"}),
            json!({"email": "a@example.com", "name": "A", "avatarUrl": "http://[::1"}),
            json!({"email": "a@example.com", "name": "A", "avatarUrl": "https://x.io:/a"}),
            json!([1, 2]),
        ] {
            assert!(Profile::parse(&bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn idempotency_keys_are_short_visible_ascii() {
        assert!(IdempotencyKey::parse("pay-1").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(129)).is_err());
    }
}
