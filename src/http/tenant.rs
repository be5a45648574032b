//! Which tenant a request acts for. Every data handler takes a [`Tenant`]; nothing else decides.
//! It is the project of the request's API key (see `super::auth`): the default tenant for the
//! master key and for open (keyless loopback) mode.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::auth::AuthContext;
use crate::error::Error;
use crate::store::TenantId;

pub struct Tenant(pub TenantId);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuthContext>()
            .map(|ctx| Tenant(ctx.tenant.clone()))
            .ok_or_else(|| Error::internal("tenant", "the auth middleware did not run for this route"))
    }
}
