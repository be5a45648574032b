//! `nexus check`: does every derived store hold exactly the records that project into it?

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::projection::Projection;
use crate::error::Result;
use crate::store::RecordKey;
use crate::store::records::RecordStore;

/// How many diverging ids a report lists per store.
const LISTED: usize = 20;
const PAGE: usize = 2000;

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoreCheck {
    pub store: String,
    pub backend: String,
    /// Records that should be in this store.
    pub expected: u64,
    /// Items the store holds.
    pub indexed: u64,
    pub committed_seq: u64,
    pub missing_count: u64,
    /// Up to 20 `tenant/id` of records the store lacks.
    pub missing: Vec<String>,
    pub extra_count: u64,
    /// Up to 20 keys the store holds that no record accounts for.
    pub extra_keys: Vec<u64>,
    pub ok: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckReport {
    pub ok: bool,
    pub records: u64,
    pub head_seq: u64,
    pub tenants: Vec<(String, u64)>,
    pub stores: Vec<StoreCheck>,
}

impl CheckReport {
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let tenants: Vec<String> = self.tenants.iter().map(|(t, n)| format!("{t}: {n}")).collect();
        out.push_str(&format!(
            "records   {} records, change log at {} ({})\n",
            self.records,
            self.head_seq,
            if tenants.is_empty() { "no tenants".to_string() } else { tenants.join(", ") }
        ));
        for s in &self.stores {
            let verdict = if s.ok {
                "ok".to_string()
            } else {
                format!("DIVERGES: {} missing, {} extra", s.missing_count, s.extra_count)
            };
            out.push_str(&format!(
                "{:<9} {} expected, {} indexed, committed at {} ({}): {verdict}\n",
                s.store, s.expected, s.indexed, s.committed_seq, s.backend
            ));
            for id in &s.missing {
                out.push_str(&format!("          missing {id}\n"));
            }
            for key in &s.extra_keys {
                out.push_str(&format!("          extra key {key}\n"));
            }
        }
        out.push_str(if self.ok {
            "check passed\n"
        } else {
            "check FAILED: run `nexus reindex` for the stores above\n"
        });
        out
    }
}

pub async fn check(records: &dyn RecordStore, projections: &[Arc<dyn Projection>]) -> Result<CheckReport> {
    let head_seq = records.head_seq().await?;
    let mut expected: Vec<BTreeSet<RecordKey>> = vec![BTreeSet::new(); projections.len()];
    let mut names: HashMap<RecordKey, String> = HashMap::new();
    let mut tenants: std::collections::BTreeMap<String, u64> = Default::default();
    let mut total = 0u64;
    let mut after = 0;
    loop {
        let page = records.scan(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.key;
        for record in &page {
            total += 1;
            *tenants.entry(record.tenant.to_string()).or_default() += 1;
            let mut wanted = false;
            for (i, p) in projections.iter().enumerate() {
                if p.wants(record) {
                    expected[i].insert(record.key);
                    wanted = true;
                }
            }
            if wanted {
                names.insert(record.key, format!("{}/{}", record.tenant, record.id));
            }
        }
    }
    let mut stores = Vec::new();
    for (i, p) in projections.iter().enumerate() {
        let actual: BTreeSet<RecordKey> = p.keys().await?.into_iter().collect();
        let missing: Vec<RecordKey> = expected[i].difference(&actual).copied().collect();
        let extra: Vec<RecordKey> = actual.difference(&expected[i]).copied().collect();
        stores.push(StoreCheck {
            store: p.name().to_string(),
            backend: p.backend().to_string(),
            expected: expected[i].len() as u64,
            indexed: actual.len() as u64,
            committed_seq: p.committed_seq().await?,
            missing_count: missing.len() as u64,
            missing: missing
                .iter()
                .take(LISTED)
                .map(|k| names.get(k).cloned().unwrap_or_else(|| k.to_string()))
                .collect(),
            extra_count: extra.len() as u64,
            extra_keys: extra.into_iter().take(LISTED).collect(),
            ok: missing.is_empty() && actual.len() == expected[i].len(),
        });
    }
    Ok(CheckReport {
        ok: stores.iter().all(|s| s.ok),
        records: total,
        head_seq,
        tenants: tenants.into_iter().collect(),
        stores,
    })
}
