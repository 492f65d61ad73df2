//! Operators: the people who sign in to the dashboard through the organisation's OpenID
//! provider (table `operators`), known by the provider's issuer and subject, and the dashboard
//! roles they can hold.

use uuid::Uuid;

use crate::db::{DbError, Sql};

/// What a dashboard session may do. Each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DashboardRole {
    /// Reads every page.
    Viewer,
    /// Also retries and cancels jobs and exports.
    Operator,
    /// Also manages API keys (and whatever else configures the service).
    Admin,
}

impl DashboardRole {
    /// Every role, lowest first.
    pub const ALL: [Self; 3] = [Self::Viewer, Self::Operator, Self::Admin];

    /// The stored and configured form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    /// The role named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for DashboardRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who signed in, as the identity provider vouched for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider (`iss`).
    pub issuer: String,
    /// The person at that provider (`sub`): stable, never reassigned.
    pub subject: String,
    /// A name to show (`name`, else `preferred_username`, else `email`, else the subject).
    pub name: String,
    /// Their e-mail address, when the provider gave one.
    pub email: Option<String>,
}

/// Records a sign-in of `identity` with `role`: the operator's row is created on their first
/// sign-in and brought up to date on every later one. Their id.
pub async fn signed_in(db: &impl Sql, identity: &Identity, role: DashboardRole) -> Result<Uuid, DbError> {
    let row = db
        .query_one(
            "INSERT INTO operators (id, issuer, subject, name, email, role)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT ON CONSTRAINT operators_identity DO UPDATE
                 SET name = excluded.name, email = excluded.email, role = excluded.role,
                     last_signed_in_at = now()
             RETURNING id",
            &[
                &Uuid::new_v4(),
                &identity.issuer,
                &identity.subject,
                &identity.name,
                &identity.email,
                &role.as_str(),
            ],
        )
        .await?;
    Ok(row.get(0))
}
