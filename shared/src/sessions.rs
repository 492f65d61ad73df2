//! Dashboard sessions (table `admin_sessions`): an admin API key is exchanged for a random
//! session token held in a cookie. Only the token's SHA-256 is stored, and a session ends with
//! its expiry, its sign-out, or the deactivation or deletion of the key behind it.

use std::time::Duration;

use crate::db::Sql;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::db::DbError;

/// A signed-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    /// The admin key that signed in.
    pub api_key_id: Uuid,
    /// The admin key's name, shown in the page header.
    pub key_name: String,
    /// Every form of this session must carry this token.
    pub csrf_token: String,
}

/// A new session: the cookie value (shown to the browser only) and the session itself.
pub struct NewSession {
    /// The cookie value (stored only as its SHA-256).
    pub token: String,
    /// The session.
    pub session: Session,
}

/// 244 random bits from the OS generator (two v4 UUIDs), hex.
fn random_token() -> String {
    let mut token = Uuid::new_v4().simple().to_string();
    token.push_str(&Uuid::new_v4().simple().to_string());
    token
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Opens a session for an admin key; expired sessions are swept on the way.
pub async fn create(
    db: &impl Sql,
    api_key_id: Uuid,
    key_name: &str,
    ttl: Duration,
) -> Result<NewSession, DbError> {
    db.execute("DELETE FROM admin_sessions WHERE expires_at < now()", &[]).await?;
    let token = random_token();
    let csrf_token = random_token();
    db.execute(
        "INSERT INTO admin_sessions (token_hash, api_key_id, csrf_token, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        &[&hash(&token), &api_key_id, &csrf_token, &ttl.as_secs_f64()],
    )
    .await?;
    Ok(NewSession { token, session: Session { api_key_id, key_name: key_name.to_owned(), csrf_token } })
}

/// The live session behind a cookie value: unexpired, and its key still an active admin key.
pub async fn find(db: &impl Sql, token: &str) -> Result<Option<Session>, DbError> {
    let row = db
        .query_opt(
            &format!(
                "SELECT s.api_key_id, k.name, s.csrf_token
                 FROM admin_sessions s JOIN api_keys k ON k.id = s.api_key_id
                 WHERE s.token_hash = $1 AND s.expires_at > now()
                   AND {} AND k.role = 'admin'",
                crate::api_keys::ACTIVE
            ),
            &[&hash(token)],
        )
        .await?;
    Ok(row.map(|row| Session { api_key_id: row.get(0), key_name: row.get(1), csrf_token: row.get(2) }))
}

/// Ends a session (sign-out).
pub async fn delete(db: &impl Sql, token: &str) -> Result<(), DbError> {
    db.execute("DELETE FROM admin_sessions WHERE token_hash = $1", &[&hash(token)]).await?;
    Ok(())
}
