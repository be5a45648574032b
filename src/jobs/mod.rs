//! Background work: a runner claims jobs from the durable queue (`store::jobs`) and hands each
//! to the handler registered for its kind.
//!
//! At-least-once: a job whose worker dies is claimed again when its lease runs out, so handlers
//! must be idempotent. A failed attempt is retried with exponential backoff until the job's
//! attempts are used up (then it is `dead`); a handler error marked permanent fails it at once.
//! Progress and state changes are published on a broadcast channel that HTTP clients follow.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::{Notify, broadcast, watch};

use crate::error::{Error, ErrorCode, Result};
use crate::store::TenantId;
use crate::store::jobs::{Job, JobState, JobStore};

const LEASE: Duration = Duration::from_secs(60);
const IDLE_POLL: Duration = Duration::from_millis(500);
const MAX_BACKOFF_SECS: i64 = 300;

/// A change a client may follow.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct JobEvent {
    pub job_id: String,
    #[serde(skip)]
    pub tenant: Option<TenantId>,
    pub state: JobState,
    pub progress: serde_json::Value,
    pub error: Option<String>,
    /// The stable code of `error`.
    pub error_code: Option<String>,
}

/// What a handler sees of its job while it runs.
pub struct JobContext {
    store: Arc<dyn JobStore>,
    events: broadcast::Sender<JobEvent>,
    job: Job,
}

impl JobContext {
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// Reports progress and renews the lease; fails with `cancelled` when the job was cancelled,
    /// so the handler stops at its next step.
    pub async fn progress(&self, done: u64, total: u64) -> Result<()> {
        let progress = serde_json::json!({"done": done, "total": total});
        if !self.store.heartbeat(&self.job.id, progress.clone(), LEASE).await? {
            return Err(Error::new(ErrorCode::Cancelled, format!("job {} was cancelled", self.job.id)));
        }
        let _ = self.events.send(JobEvent {
            job_id: self.job.id.clone(),
            tenant: Some(self.job.tenant.clone()),
            state: JobState::Running,
            progress,
            error: None,
            error_code: None,
        });
        Ok(())
    }
}

#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// Does the work; its result is stored with the job.
    async fn run(&self, ctx: &JobContext) -> Result<serde_json::Value>;
}

pub struct Jobs {
    store: Arc<dyn JobStore>,
    handlers: HashMap<&'static str, Arc<dyn JobHandler>>,
    events: broadcast::Sender<JobEvent>,
    wake: Notify,
}

impl Jobs {
    pub fn new(store: Arc<dyn JobStore>) -> Jobs {
        Jobs { store, handlers: HashMap::new(), events: broadcast::channel(1024).0, wake: Notify::new() }
    }

    pub fn register(&mut self, kind: &'static str, handler: Arc<dyn JobHandler>) {
        self.handlers.insert(kind, handler);
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    pub async fn enqueue(
        &self,
        tenant: &TenantId,
        kind: &str,
        payload: serde_json::Value,
        max_attempts: u32,
    ) -> Result<Job> {
        if !self.handlers.contains_key(kind) {
            return Err(Error::internal("enqueue", format!("no handler for jobs of kind {kind}")));
        }
        let job = self.store.enqueue(tenant, kind, payload, max_attempts).await?;
        self.publish(&job);
        self.wake.notify_one();
        Ok(job)
    }

    pub async fn cancel(&self, tenant: &TenantId, id: &str) -> Result<Option<Job>> {
        let job = self.store.cancel(tenant, id).await?;
        if let Some(job) = &job {
            self.publish(job);
        }
        Ok(job)
    }

    fn publish(&self, job: &Job) {
        let _ = self.events.send(JobEvent {
            job_id: job.id.clone(),
            tenant: Some(job.tenant.clone()),
            state: job.state,
            progress: job.progress.clone(),
            error: job.error.clone(),
            error_code: job.error_code.clone(),
        });
    }

    /// Waits until the job has finished (or `timeout` passes) and returns it as it is then.
    pub async fn wait(&self, tenant: &TenantId, id: &str, timeout: Duration) -> Result<Job> {
        let mut events = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.store.get(tenant, id).await?.ok_or_else(|| Error::not_found("job", id))?;
            if job.state.is_finished() {
                return Ok(job);
            }
            let next = tokio::time::timeout_at(deadline, async {
                loop {
                    match events.recv().await {
                        Ok(e) if e.job_id == id => return,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            })
            .await;
            if next.is_err() {
                return self.store.get(tenant, id).await?.ok_or_else(|| Error::not_found("job", id));
            }
        }
    }

    /// Runs `workers` workers until `shutdown` turns true.
    pub fn start(
        self: &Arc<Self>,
        workers: usize,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..workers.max(1)).map(|_| tokio::spawn(self.clone().work(shutdown.clone()))).collect()
    }

    async fn work(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            let job = match self.store.claim(LEASE).await {
                Ok(Some(job)) => job,
                Ok(None) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim a job");
                    tokio::time::sleep(IDLE_POLL).await;
                    continue;
                }
            };
            self.publish(&job);
            self.run(job).await;
        }
    }

    async fn run(&self, job: Job) {
        let Some(handler) = self.handlers.get(job.kind.as_str()).cloned() else {
            let error = Error::new(ErrorCode::Internal, format!("no handler for jobs of kind {}", job.kind));
            let _ = self.store.fail(&job.id, &error, None).await;
            return;
        };
        let ctx = JobContext { store: self.store.clone(), events: self.events.clone(), job: job.clone() };
        let outcome = handler.run(&ctx).await;
        metrics::counter!("nexus_jobs_finished_total", "kind" => job.kind.clone(), "ok" => outcome.is_ok().to_string())
            .increment(1);
        let state = match outcome {
            Ok(result) => self.store.complete(&job.id, result).await.map(|_| JobState::Succeeded),
            Err(e) if e.code == ErrorCode::Cancelled => return,
            Err(e) => {
                let permanent = e.code.http_status() < 500 && e.code != ErrorCode::Timeout;
                let backoff = 2i64.pow(job.attempts.min(8)).min(MAX_BACKOFF_SECS);
                let retry_at = (!permanent).then(|| chrono::Utc::now() + chrono::Duration::seconds(backoff));
                tracing::warn!(job = %job.id, kind = %job.kind, attempt = job.attempts, error = %e, "job failed");
                self.store.fail(&job.id, &e, retry_at).await
            }
        };
        match state {
            Ok(_) => {
                if let Ok(Some(job)) = self.store.get(&job.tenant, &job.id).await {
                    self.publish(&job);
                }
            }
            Err(e) => tracing::error!(job = %job.id, error = %e, "cannot record the job's outcome"),
        }
    }
}
