//! Which tenant a request acts for. Every data handler takes a [`Tenant`]; nothing else decides.
//! Until API keys exist, every request acts for the default tenant.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::Error;
use crate::store::TenantId;

pub struct Tenant(pub TenantId);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = Error;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Tenant(TenantId::default_tenant()))
    }
}
