//! Dashboard sessions (table `admin_sessions`): a person signed in through single sign-on, or
//! an admin API key used for break-glass sign-in, is given a random session token held in a
//! cookie. Only the token's SHA-256 is stored. A session ends with its expiry, its sign-out,
//! or the removal of what stands behind it (the operator, or the key's deactivation or
//! deletion); a key's session also ends when key sign-in is switched off.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    audit::{Actor, ActorKind},
    db::{DbError, Sql},
    operators::DashboardRole,
};

/// Who holds a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A person, signed in through the identity provider.
    Person {
        /// Their id in `operators`.
        operator_id: Uuid,
        /// Their name (and e-mail, when known), for the page header and the audit trail.
        name: String,
    },
    /// An admin API key (break-glass sign-in).
    Key {
        /// The key.
        api_key_id: Uuid,
        /// Its name and prefix, for the page header and the audit trail.
        name: String,
    },
}

/// A signed-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who.
    pub holder: Holder,
    /// What they may do.
    pub role: DashboardRole,
    /// Every form of this session must carry this token.
    pub csrf_token: String,
    /// When the session ends.
    pub expires_at: OffsetDateTime,
}

impl Session {
    /// The name shown in the page header.
    pub fn display_name(&self) -> &str {
        match &self.holder {
            Holder::Person { name, .. } | Holder::Key { name, .. } => name,
        }
    }

    /// The session's holder as the audit trail names them.
    pub fn actor(&self) -> Actor {
        match &self.holder {
            Holder::Person { operator_id, name } => {
                Actor { kind: ActorKind::Person, id: operator_id.to_string(), name: name.clone() }
            }
            Holder::Key { api_key_id, name } => {
                Actor { kind: ActorKind::BreakGlass, id: api_key_id.to_string(), name: name.clone() }
            }
        }
    }
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

/// A key's name and prefix as sessions and the audit trail show them.
pub fn key_label(name: &str, prefix: &str) -> String {
    format!("{name} ({prefix}…)")
}

/// Opens a session for `holder` with `role` until `expires_at` (a person's keeps the provider's
/// `id_token`); expired sessions are swept on the way.
pub async fn create(
    db: &impl Sql,
    holder: Holder,
    role: DashboardRole,
    expires_at: OffsetDateTime,
    id_token: Option<&str>,
) -> Result<NewSession, DbError> {
    db.execute("DELETE FROM admin_sessions WHERE expires_at < now()", &[]).await?;
    let token = random_token();
    let csrf_token = random_token();
    let (api_key_id, operator_id) = match &holder {
        Holder::Person { operator_id, .. } => (None, Some(*operator_id)),
        Holder::Key { api_key_id, .. } => (Some(*api_key_id), None),
    };
    // Stored to the microsecond: keep what is stored.
    let expires_at = crate::db::to_micros(expires_at);
    db.execute(
        "INSERT INTO admin_sessions (token_hash, api_key_id, operator_id, role, csrf_token, expires_at, id_token)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&hash(&token), &api_key_id, &operator_id, &role.as_str(), &csrf_token, &expires_at, &id_token],
    )
    .await?;
    Ok(NewSession { token, session: Session { holder, role, csrf_token, expires_at } })
}

/// The live session behind a cookie value: unexpired, its operator still there or its key still
/// an active admin key (and key sessions only while `key_sessions` allows them).
pub async fn find(db: &impl Sql, token: &str, key_sessions: bool) -> Result<Option<Session>, DbError> {
    let row = db
        .query_opt(
            &format!(
                "SELECT s.role, s.csrf_token, s.expires_at, s.operator_id, o.name AS person, o.email,
                        s.api_key_id, k.name AS key_name, k.prefix
                 FROM admin_sessions s
                 LEFT JOIN operators o ON o.id = s.operator_id
                 LEFT JOIN api_keys k ON k.id = s.api_key_id
                 WHERE s.token_hash = $1 AND s.expires_at > now()
                   AND (o.id IS NOT NULL OR ($2 AND k.id IS NOT NULL AND {} AND k.role = 'admin'))",
                crate::api_keys::ACTIVE
            ),
            &[&hash(token), &key_sessions],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let role: String = row.get("role");
    // A role this build does not know (a newer release's) grants nothing here.
    let Some(role) = DashboardRole::parse(&role) else { return Ok(None) };
    let holder = match row.get::<_, Option<Uuid>>("operator_id") {
        Some(operator_id) => {
            Holder::Person { operator_id, name: person_label(row.get("person"), row.get("email")) }
        }
        None => Holder::Key {
            api_key_id: row.get("api_key_id"),
            name: key_label(row.get("key_name"), row.get("prefix")),
        },
    };
    Ok(Some(Session { holder, role, csrf_token: row.get("csrf_token"), expires_at: row.get("expires_at") }))
}

/// A person's name with their e-mail, as sessions and the audit trail show them.
pub fn person_label(name: &str, email: Option<&str>) -> String {
    match email {
        Some(email) if email != name => format!("{name} <{email}>"),
        _ => name.to_owned(),
    }
}

/// Ends a session (sign-out); the provider's ID token it kept, if any.
pub async fn delete(db: &impl Sql, token: &str) -> Result<Option<String>, DbError> {
    let row = db
        .query_opt("DELETE FROM admin_sessions WHERE token_hash = $1 RETURNING id_token", &[&hash(token)])
        .await?;
    Ok(row.and_then(|r| r.get(0)))
}
